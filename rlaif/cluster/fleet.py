"""The rollout workers of a run: which are in service, weight sync to them, and the return of lost ones.

A worker whose actor or node dies is taken out of service at the first call that fails; its episodes fail
(the orchestrator drops their groups as `infra_error` and counts them). Ray restarts the actor where its
bundle finds room (`max_restarts=-1`); `_revive` then starts its engine again and gives it the current
weights, and only then is it back in service; one not back within `train.worker_restart_timeout_s` is given
up on. A worker Ray gave up on is replaced by a new actor in the same bundle. Groups go round-robin to the
workers in service; with none, they wait up to `train.worker_restart_timeout_s`. The mechanism is
`rlaif.cluster.rotation.WorkerRotation`; this module adds the engines' revival and the weight sync.

Weight sync: by the object store, one copy of host buckets for every engine; or by broadcast in a process
group from the learner to every engine (see `rlaif.weights.group`). The broadcast needs every engine of its
group: while one is lost the others take the object-store path, and the group is rebuilt once all are back.
An engine that dies or hangs during a broadcast aborts it within `train.weight_sync_timeout_s` (per bucket) on
every rank; the engines that did not get the version then get it by the object store in the same sync.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from rlaif.cluster.actors import actor_lost
from rlaif.cluster.rotation import Event, WorkerRotation
from rlaif.env import Submission
from rlaif.types import Task, Trajectory
from rlaif.weights.buckets import WeightSyncError
from rlaif.weights.group import BroadcastAborted

log = logging.getLogger(__name__)


def broadcast_aborted(error: object) -> bool:
    """Whether a call's error is a failed broadcast (`BroadcastAborted`, as raised or as Ray's wrapper of it)."""
    return isinstance(error, BroadcastAborted) or isinstance(getattr(error, "cause", None), BroadcastAborted)


def max_gap(expected: list[float], got: list[float]) -> float:
    """The largest difference between two lists of logprobs (infinite when their lengths differ)."""
    if len(expected) != len(got):
        return float("inf")
    return max((abs(a - b) for a, b in zip(expected, got, strict=True)), default=0.0)


class Fleet:
    """`await start()`, then `rollout(...)` concurrently and `sync(version)` between steps; `close()` at the end.

    `new_worker(i)` creates the actor of slot `i`; `version()` is the learner's current weight version;
    `on_change()` is called when a worker comes back; `count(what)` records a loss or a return, and
    `weight_broadcast` for a broadcast aborted. `sync_timeout_s` bounds the learner's wait on each broadcast
    bucket (the workers take theirs from `train.weight_sync_timeout_s`).
    """

    def __init__(self, new_worker: Callable[[int], Any], size: int, learner: Any, *, transport: str,
                 layout: tuple[float, str], restart_timeout_s: float, version: Callable[[], int],
                 on_change: Callable[[], None], count: Callable[[str], None], probe_every: int = 0,
                 probe_tolerance: float = 0.02, sync_timeout_s: float = 60.0) -> None:
        self.new_worker, self.learner, self.transport, self.layout = new_worker, learner, transport, layout
        self.sync_timeout_s = sync_timeout_s
        self.probe_every, self.probe_tolerance, self.syncs = probe_every, probe_tolerance, 0
        self.version, self.on_change, self.count = version, on_change, count
        self.rotation: WorkerRotation[Any] = WorkerRotation(
            (new_worker(i) for i in range(size)), name="rollout worker", revive=self._revive,
            wait_s=restart_timeout_s, give_up_s=restart_timeout_s, probe_timeout_s=restart_timeout_s,
            on_event=self._on_event)
        self.lock = asyncio.Lock()  # one weight load at a time: a sync, or a revived worker's first weights
        self.group_ok = False  # the broadcast group holds every worker's engine

    @property
    def workers(self) -> list[Any]:
        return self.rotation.workers

    async def start(self) -> None:
        await asyncio.gather(*(w.start.remote() for w in self.workers))
        if self.transport == "broadcast":
            await self._open_group()

    async def _open_group(self) -> None:
        """(Re)build the broadcast group: the learner, then one worker process per engine (no tensor parallelism)."""
        host, port = (await self.learner.endpoint.remote()).rsplit(":", 1)
        world = 1 + len(self.workers)
        await asyncio.gather(self.learner.open_weight_group.remote(host, int(port), world, self.sync_timeout_s),
                             *(w.join_weight_group.remote(host, int(port), 1 + i, world)
                               for i, w in enumerate(self.workers)))
        self.group_ok = True

    async def rollout(self, index: int, task: Task, group_id: str,
                      temperature: float | None = None) -> tuple[Trajectory, Submission | None]:
        """One episode of group `index` on its worker (at `temperature`, None: the rollout's); an error that means
        the worker is gone takes it out."""
        return await self.rotation.call(lambda w: w.rollout.remote(task, group_id, temperature), key=index,
                                        resend=False)

    async def sync(self, version: int) -> None:
        """Send the learner's weights, as `version`, to every worker in service."""
        async with self.lock:
            targets = self.rotation.in_service
            complete = len(targets) == len(self.workers)
            if self.transport == "broadcast" and not self.group_ok and complete:
                await self._open_group()
            if self.transport == "broadcast" and self.group_ok and complete:
                targets = await self._broadcast(version, targets)
            if targets:
                buckets, expected = self.learner.sync_payload.options(num_returns=2).remote(*self.layout)
                results = await asyncio.gather(*(self.workers[i].load_weights.remote(buckets, version, expected)
                                                 for i in targets), return_exceptions=True)
                self._settle(targets, results)
            self.syncs += 1
            if self.probe_every and self.syncs % self.probe_every == 0:
                await self._probe(version)

    async def _broadcast(self, version: int, targets: list[int]) -> list[int]:
        """Broadcast `version` to `targets`; returns those still without it: none, unless the broadcast aborted
        (then the group is gone, and the workers lost with it are out of service)."""
        plans, expected = self.learner.weight_plan.options(num_returns=2).remote(*self.layout)
        sender = self.learner.broadcast_weights.remote()
        results = await asyncio.gather(*(self.workers[i].receive_weights.remote(plans, version, expected)
                                         for i in targets), return_exceptions=True)
        [sent] = await asyncio.gather(sender, return_exceptions=True)
        if isinstance(sent, BaseException) and not broadcast_aborted(sent):
            raise sent
        pending = [i for i, result in zip(targets, results, strict=True) if broadcast_aborted(result)]
        if broadcast_aborted(sent) or pending or any(actor_lost(result) for result in results):
            self.group_ok = False  # rebuilt by the first sync that finds every worker in service
            self.count("weight_broadcast")
            why = next((getattr(e, "cause", e) for e in (sent, *results) if broadcast_aborted(e)), "a worker was lost")
            log.warning("weight sync v%d: broadcast aborted (%s); %d of %d workers get it by the object store",
                        version, why, len(pending), len(targets))
        self._settle(targets, [None if broadcast_aborted(result) else result for result in results])
        return pending

    def _settle(self, targets: list[int], results: list[Any]) -> None:
        """Take out of service the workers lost during a call; raise any other error of theirs."""
        for i, result in zip(targets, results, strict=True):
            if actor_lost(result):
                self.lose(i)
            elif isinstance(result, BaseException):
                raise result

    async def _probe(self, version: int) -> None:
        """Check that every engine in service scores the learner's probe as the learner does (see `Learner.probe`)."""
        ids, expected = await self.learner.probe.remote()
        targets = self.rotation.in_service
        results = await asyncio.gather(*(self.workers[i].probe.remote(ids) for i in targets), return_exceptions=True)
        for i, result in zip(targets, results, strict=True):
            if actor_lost(result):
                self.lose(i)
                continue
            if isinstance(result, BaseException):
                raise result
            gap = max_gap(expected, result)
            if gap > self.probe_tolerance:
                raise WeightSyncError(
                    f"weight sync v{version}: rollout worker {i} scores the probe text up to {gap:.3g} away from the "
                    f"learner (train.probe_tolerance {self.probe_tolerance:g}): the bytes arrived, but the engine's "
                    "loader placed them wrongly, or its numerics need a larger tolerance")

    def lose(self, i: int) -> None:
        """Take worker `i` out of service and wait for it to come back (see `_revive`)."""
        self.rotation.lose(i)

    def _on_event(self, event: Event, i: int) -> None:
        if event == "lost":
            self.group_ok = False
            self.count("rollout_worker")
        elif event == "back":
            self.count("rollout_worker_restarted")
            self.on_change()
        elif event == "given_up":
            self.count("rollout_worker_given_up")  # not back in time, or its start failed: the run goes on

    async def _revive(self, i: int) -> None:
        """Start the restarted worker's engine and give it the current weights; a worker Ray gave up on is
        replaced by a new actor in its bundle (then tried again).

        It is stamped with the learner's version at the time, which may be one behind the weights it gets (a
        step may be in flight): staleness is over-counted, never under-counted.
        """
        from ray.exceptions import ActorDiedError

        try:
            await self.workers[i].start.remote()
        except ActorDiedError:
            self.rotation.replace(i, self.new_worker(i))
            self.count("rollout_worker_replaced")
            raise
        async with self.lock:
            buckets, expected = self.learner.sync_payload.options(num_returns=2).remote(*self.layout)
            await self.workers[i].load_weights.remote(buckets, self.version(), expected)

    async def close(self) -> None:
        import ray

        await self.rotation.close()
        await asyncio.gather(*(w.close.remote() for w in self.workers), return_exceptions=True)
        for worker in self.workers:
            ray.kill(worker)
