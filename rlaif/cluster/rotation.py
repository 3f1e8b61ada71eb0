"""Worker rotation: which actors of a pool are in service, and the return of lost ones.

One mechanism for every pool of Ray actors that callers share (the rollout fleet, the reward service):

- A worker leaves rotation when a call to it fails with an error that `actor_lost` accepts (its actor or node
  died, or Ray restarted it and it is not started yet): `call` marks it, or the owner calls `lose(i)`. Any other
  error is the call's own failure and leaves the worker in rotation.
- It comes back through a background task started by `lose`: the owner's `revive(i)` hook is tried until it
  returns (the fleet starts the engine and loads the current weights; the reward service pings). An attempt
  that raises an `actor_lost` error or times out (`probe_timeout_s`) is tried again `retry_s` later; one that
  raises anything else gives up on the worker, and so does passing `give_up_s` (when set) since it was lost. A
  worker given up on stays out for good. The hook may `replace(i, ...)` the actor (Ray gave up on it).
- Callers that find none in rotation wait until one is back, up to `wait_s` (or a `deadline` they pass), then
  get `NoWorkerInService`. `call` re-sends a call lost with its worker to another one (if `resend`): a lost
  call spends no retry of the caller's, only its waiting time.
- `on_event(event, i)` reports `call_lost` (each call lost with its worker), `lost` (the worker left rotation),
  `back` (it is in rotation again) and `given_up`, for the owner's metrics and reactions.

Not thread-safe: create and use it from one asyncio event loop (the Ray driver's); `lose` needs that loop
running. `close()` cancels the revivals in progress.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, Literal, TypeVar

from rlaif.cluster.actors import actor_lost
from rlaif.errors import RlaifError

W = TypeVar("W")
T = TypeVar("T")
Event = Literal["call_lost", "lost", "back", "given_up"]


class NoWorkerInService(RlaifError):
    """No worker of the pool was in rotation for as long as the caller could wait."""


class WorkerRotation(Generic[W]):
    """Workers `0..n-1` of one pool (`workers[i]`, usually Ray actor handles), in rotation or out of it.

    `name` (e.g. "rollout worker") is for messages; `revive(i)` brings lost worker `i` back (see the module
    docstring for when it is retried and when given up).
    """

    def __init__(self, workers: Iterable[W], *, name: str, revive: Callable[[int], Awaitable[object]],
                 wait_s: float, on_event: Callable[[Event, int], None], give_up_s: float | None = None,
                 probe_timeout_s: float = 10.0, retry_s: float = 1.0) -> None:
        self.workers = list(workers)
        self.name, self.revive, self.on_event = name, revive, on_event
        self.wait_s, self.give_up_s, self.probe_timeout_s, self.retry_s = wait_s, give_up_s, probe_timeout_s, retry_s
        self._in_service = set(range(len(self.workers)))
        self._any = asyncio.Event()  # set while any worker is in rotation
        self._any.set()
        self._revivals: dict[int, asyncio.Task[None]] = {}
        self._turn = itertools.count()

    @property
    def in_service(self) -> list[int]:
        """The indices of the workers in rotation, ascending."""
        return sorted(self._in_service)

    async def pick(self, key: int | None = None, *, deadline: float | None = None) -> int:
        """A worker in rotation: `key % n` when given and in rotation (so related calls share a worker), else
        the next in turn. With none in rotation, wait for one until `deadline` (`time.monotonic()`; default:
        `wait_s` from now), then raise `NoWorkerInService`."""
        if deadline is None:
            deadline = time.monotonic() + self.wait_s
        while not self._in_service:
            try:
                await asyncio.wait_for(self._any.wait(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                raise NoWorkerInService(f"no {self.name} in rotation for {self.wait_s:g} s: all were lost and none "
                                        "came back in that time (Ray found no room to restart them, or reviving "
                                        "them failed)") from None
        if key is not None and key % len(self.workers) in self._in_service:
            return key % len(self.workers)
        pool = self.in_service
        return pool[(next(self._turn) if key is None else key) % len(pool)]

    async def call(self, fn: Callable[[W], Awaitable[T]], *, key: int | None = None, resend: bool = True,
                   deadline: float | None = None) -> T:
        """`await fn(worker)` on a worker picked as by `pick`. When the call is lost with its worker, the worker
        leaves rotation and the call goes to another (waiting for one until the same deadline) if `resend`,
        else the error is raised. Any other error is raised as it is."""
        if deadline is None:
            deadline = time.monotonic() + self.wait_s
        while True:
            i = await self.pick(key, deadline=deadline)
            try:
                return await fn(self.workers[i])
            except Exception as err:
                if not actor_lost(err):
                    raise
                self.on_event("call_lost", i)
                self.lose(i)
                if not resend:
                    raise

    def lose(self, i: int) -> None:
        """Take worker `i` out of rotation and start bringing it back; a no-op when it is out already."""
        if i not in self._in_service:
            return
        self._in_service.discard(i)
        if not self._in_service:
            self._any.clear()
        self.on_event("lost", i)
        self._revivals[i] = asyncio.get_running_loop().create_task(self._bring_back(i))

    def replace(self, i: int, worker: W) -> None:
        """Put a new actor in slot `i` (for a `revive` hook whose actor Ray gave up on)."""
        self.workers[i] = worker

    async def _bring_back(self, i: int) -> None:
        deadline = None if self.give_up_s is None else time.monotonic() + self.give_up_s
        while True:
            bound = self.probe_timeout_s if deadline is None else min(self.probe_timeout_s,
                                                                      max(1.0, deadline - time.monotonic()))
            try:
                await asyncio.wait_for(self.revive(i), bound)
                break
            except Exception as err:  # still restarting, not placed yet, or its revival failed
                retry = isinstance(err, asyncio.TimeoutError) or actor_lost(err)
                if not retry or (deadline is not None and time.monotonic() >= deadline):
                    self._revivals.pop(i, None)
                    self.on_event("given_up", i)
                    return
            await asyncio.sleep(self.retry_s)
        self._revivals.pop(i, None)
        self._in_service.add(i)
        self._any.set()
        self.on_event("back", i)

    async def close(self) -> None:
        """Cancel the revivals in progress (the workers stay out of rotation)."""
        revivals = list(self._revivals.values())
        for task in revivals:
            task.cancel()
        await asyncio.gather(*revivals, return_exceptions=True)
