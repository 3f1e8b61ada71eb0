"""A rank that dies or hangs during a weight broadcast: every other rank's wait ends within the group's timeout with
`BroadcastAborted`, not at gloo's or NCCL's own (minutes) or never, and the fleet then delivers the version to the
surviving engines by the object store and rebuilds the group once all are back."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch
from ray.exceptions import RayActorError

from rlaif.train.learner import Learner
from rlaif.weights.buckets import Bucket, digest, unpack, verify
from rlaif.weights.group import BroadcastAborted, open_group

pytestmark = pytest.mark.unit

TIMEOUT_S = 2.0
BUCKETS = 6
BUCKET_BYTES = 4 << 20  # larger than the sockets' buffers: a send to a rank that stopped reading blocks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- processes in a gloo group -----------------------------------------------------------------------------


def _rank(rank: int, port: int, fate: str, results: Any) -> None:
    """Rank 0 sends `BUCKETS` buckets, the others receive them; rank 2 dies or hangs after the first. Ranks 0 and 1
    then stay, group open (the worst case: a live peer's sockets do not close), until the test ends them."""
    group = open_group("127.0.0.1", port, rank, 3, "cpu", timeout_s=TIMEOUT_S, join_timeout_s=60)
    started = time.monotonic()
    try:
        if rank == 0:
            group.send(torch.ones(BUCKET_BYTES, dtype=torch.uint8) for _ in range(BUCKETS))
        for n in range(BUCKETS if rank else 0):
            group.receive(BUCKET_BYTES, "cpu")
            if rank == 2 and n == 0:
                if fate == "hangs":
                    os.kill(os.getpid(), signal.SIGSTOP)
                os._exit(1)
        results.put((rank, "completed", time.monotonic() - started))
    except BroadcastAborted as err:
        results.put((rank, f"aborted: {err}", time.monotonic() - started))
    time.sleep(60)


@pytest.mark.parametrize("fate", ["dies", "hangs"])
def test_when_a_receiver_dies_or_hangs_mid_broadcast_the_sender_and_the_other_receiver_abort_within_the_bound(fate):
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    port = _free_port()
    ranks = [context.Process(target=_rank, args=(rank, port, fate, results)) for rank in range(3)]
    for process in ranks:
        process.start()
    try:
        outcome = {}
        for _ in range(2):
            rank, what, seconds = results.get(timeout=60)
            outcome[rank] = (what, seconds)
    finally:
        for process in ranks:
            if process.is_alive():
                os.kill(process.pid, signal.SIGKILL)
            process.join(10)
    print(f"receiver {fate}: " + "; ".join(f"rank {r} {w[:60]!r} after {s:.2f} s" for r, (w, s) in outcome.items()))
    assert set(outcome) == {0, 1}
    for what, seconds in outcome.values():
        assert what.startswith("aborted") and seconds < 5 * TIMEOUT_S, outcome


def test_an_aborted_group_refuses_further_broadcasts_at_once():
    port = _free_port()
    group = open_group("127.0.0.1", port, 0, 1, "cpu", timeout_s=TIMEOUT_S)
    group.abort()
    started = time.monotonic()
    with pytest.raises(BroadcastAborted, match="rejoin"):
        group.send([torch.zeros(8, dtype=torch.uint8)])
    assert time.monotonic() - started < 1


# --- the fleet's fallback ----------------------------------------------------------------------------------


class Handle:
    """A stand-in for a Ray actor handle: `handle.method.remote(*args)` runs the method as a task, one call at a
    time in call order (as a Ray actor does), with awaitable arguments resolved first (as ObjectRefs are);
    blocking methods run in a thread."""

    def __init__(self, actor: Any) -> None:
        self._actor, self._turn = actor, asyncio.Lock()

    def __getattr__(self, name: str) -> _Method:
        return _Method(self, getattr(self._actor, name))


class _Method:
    def __init__(self, handle: Handle, fn: Callable, returns: int = 1) -> None:
        self.handle, self.fn, self.returns = handle, fn, returns

    def options(self, num_returns: int) -> _Method:
        return _Method(self.handle, self.fn, num_returns)

    def remote(self, *args: Any) -> Any:
        task = asyncio.ensure_future(self._call(args))
        if self.returns == 1:
            return task
        return tuple(asyncio.ensure_future(_item(task, k)) for k in range(self.returns))

    async def _call(self, args: tuple) -> Any:
        async with self.handle._turn:
            args = tuple([await a if asyncio.isfuture(a) else a for a in args])
            if asyncio.iscoroutinefunction(self.fn):
                return await self.fn(*args)
            return await asyncio.to_thread(self.fn, *args)


async def _item(task: asyncio.Future, k: int) -> Any:
    return (await task)[k]


class EnginelessWorker:
    """A rollout worker without an engine: a real member of the weight group that checks what it receives against
    the digest, as the engine does; `dies_after` buckets into a broadcast it closes its group and fails as a dead
    actor's call does. Ray would then restart it: its next `start` succeeds."""

    def __init__(self, dies_after: int | None = None) -> None:
        self.dies_after, self.version, self.group, self.broadcasts = dies_after, 0, None, 0

    async def start(self) -> None:
        pass

    def join_weight_group(self, host: str, port: int, rank: int, world_size: int) -> list[int]:
        self.group = open_group(host, port, rank, world_size, "cpu", timeout_s=TIMEOUT_S)
        return [rank]

    def receive_weights(self, plans: list[tuple[int, list]], version: int, expected: list[float]) -> None:
        got = []
        for n, (size, index) in enumerate(plans):
            if n == self.dies_after:
                self.dies_after, self.group = None, None  # its sockets close, as a dead process's do
                raise RayActorError()
            got += list(unpack(self.group.receive(size, "cpu"), index))
        verify(expected, digest(got))
        self.version, self.broadcasts = version, self.broadcasts + 1

    def load_weights(self, buckets: list[Bucket], version: int, expected: list[float]) -> None:
        verify(expected, digest(pair for bucket in buckets for pair in unpack(bucket.data, bucket.index)))
        self.version = version


class TinyLearner:
    """The learner's own weight-sync methods, on a few tensors instead of a model."""

    sync_payload = Learner.sync_payload
    weight_plan = Learner.weight_plan
    broadcast_weights = Learner.broadcast_weights
    open_weight_group = Learner.open_weight_group
    endpoint = staticmethod(Learner.endpoint)

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.weights = [(f"w{i}", torch.randn(256, 1024, generator=generator)) for i in range(BUCKETS)]
        self.device = torch.device("cpu")

    def _engine_weights(self, dtype: str) -> list[tuple[str, torch.Tensor]]:
        return self.weights


def test_a_worker_dying_mid_broadcast_aborts_it_within_the_bound_and_the_others_get_the_version_by_object_store():
    from rlaif.cluster.fleet import Fleet

    async def go():
        workers = [EnginelessWorker(), EnginelessWorker(dies_after=1)]
        counted: list[str] = []
        fleet = Fleet(lambda i: Handle(workers[i]), 2, Handle(TinyLearner()), transport="broadcast",
                      layout=(1.0, "float32"), restart_timeout_s=10, version=lambda: 1, on_change=lambda: None,
                      count=counted.append, sync_timeout_s=TIMEOUT_S)
        await fleet.start()
        started = time.monotonic()
        await fleet.sync(1)
        took = time.monotonic() - started
        survivor_after_abort = workers[0].version, workers[0].broadcasts, fleet.group_ok
        deadline = time.monotonic() + 10
        while fleet.rotation.in_service != [0, 1]:
            assert time.monotonic() < deadline, "the lost worker did not come back"
            await asyncio.sleep(0.01)
        await fleet.sync(2)  # all back: the group is rebuilt and the broadcast goes to both
        await fleet.rotation.close()
        return took, survivor_after_abort, counted, [(w.version, w.broadcasts) for w in workers], fleet.group_ok

    took, survivor, counted, workers, group_ok = asyncio.run(go())
    print(f"sync with a worker dying mid-broadcast took {took:.2f} s (bound {TIMEOUT_S:g} s per bucket)")
    assert took < 5 * TIMEOUT_S
    assert survivor == (1, 0, False)  # version 1 reached it by the object store; the group was dropped
    assert {"weight_broadcast", "rollout_worker", "rollout_worker_restarted"} <= set(counted), counted
    assert workers == [(2, 1), (2, 1)] and group_ok  # version 2 went by broadcast to both again

