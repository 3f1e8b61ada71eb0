"""The worker rotation (`rlaif.cluster.rotation`) with plain asyncio fakes for actors: it is pure orchestration,
so a fake that raises what a lost actor raises (`NotStarted`, `RayActorError`) is all it sees of Ray."""

from __future__ import annotations

import asyncio
import time

import pytest
from ray.exceptions import RayActorError

from rlaif.cluster.actors import NotStarted
from rlaif.cluster.rotation import NoWorkerInService, WorkerRotation

pytestmark = pytest.mark.unit


class FakeWorker:
    """An actor stand-in: `work()` answers its name, or raises what its state says."""

    def __init__(self, name: str) -> None:
        self.name, self.calls = name, 0
        self.lost = False  # its calls fail as a dead actor's would
        self.fails: Exception | None = None  # its calls fail inside it

    async def work(self) -> str:
        self.calls += 1
        await asyncio.sleep(0)
        if self.lost:
            raise RayActorError()
        if self.fails is not None:
            raise self.fails
        return self.name


class Reviver:
    """A `revive` hook: each attempt raises the next scripted error (then succeeds), or waits for `gate`."""

    def __init__(self, *errors: Exception, gate: asyncio.Event | None = None) -> None:
        self.errors, self.gate, self.attempts = list(errors), gate, 0

    async def __call__(self, i: int) -> None:
        self.attempts += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.errors:
            raise self.errors.pop(0)


def _rotation(n: int, revive, **options) -> tuple[WorkerRotation[FakeWorker], list[tuple[str, int]]]:
    events: list[tuple[str, int]] = []
    options = {"wait_s": 2.0, "retry_s": 0.01, **options}
    rotation = WorkerRotation([FakeWorker(f"w{i}") for i in range(n)], name="fake worker", revive=revive,
                              on_event=lambda event, i: events.append((event, i)), **options)
    return rotation, events


async def _until(condition, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def test_a_lost_worker_leaves_rotation_and_comes_back_after_its_revival():
    async def go():
        revive = Reviver(NotStarted("restarting"), RayActorError())  # twice not back yet, then back
        rotation, events = _rotation(2, revive)
        rotation.workers[0].lost = True
        assert await rotation.call(lambda w: w.work(), key=0) == "w1"
        assert rotation.in_service == [1]
        assert [await rotation.pick(key=0) for _ in range(3)] == [1, 1, 1]  # nothing goes to the lost one
        rotation.workers[0].lost = False
        await _until(lambda: rotation.in_service == [0, 1])
        assert revive.attempts == 3
        assert events == [("call_lost", 0), ("lost", 0), ("back", 0)]
        assert await rotation.call(lambda w: w.work(), key=0) == "w0"  # its calls return to it
        await rotation.close()

    asyncio.run(go())


def test_picks_follow_the_key_or_take_turns_among_those_in_rotation():
    async def go():
        rotation, _ = _rotation(3, Reviver(gate=asyncio.Event()))
        assert [await rotation.pick() for _ in range(4)] == [0, 1, 2, 0]
        assert [await rotation.pick(key=k) for k in (4, 5, 6)] == [1, 2, 0]
        rotation.lose(1)
        assert await rotation.pick(key=4) in (0, 2) and await rotation.pick(key=5) == 2
        assert {await rotation.pick() for _ in range(4)} == {0, 2}
        await rotation.close()

    asyncio.run(go())


def test_a_call_lost_with_its_worker_is_resent_without_spending_a_retry():
    """One `call` (one attempt of its caller's) survives its worker; a failure inside a worker is the caller's."""

    async def go():
        rotation, events = _rotation(3, Reviver(gate=asyncio.Event()))
        rotation.workers[0].lost = rotation.workers[1].lost = True
        assert await rotation.call(lambda w: w.work(), key=0) == "w2"  # lost twice, answered once
        assert [w.calls for w in rotation.workers] == [1, 1, 1]
        assert [e for e in events if e[0] == "call_lost"] == [("call_lost", 0), ("call_lost", 1)]

        rotation.workers[2].fails = ValueError("bad input")
        with pytest.raises(ValueError, match="bad input"):
            await rotation.call(lambda w: w.work())
        assert rotation.in_service == [2], "an error inside the call leaves the worker in rotation"

        rotation.workers[2].fails, rotation.workers[2].lost = None, True
        with pytest.raises(RayActorError):  # not re-sent when the caller says so; the worker still leaves
            await rotation.call(lambda w: w.work(), resend=False)
        assert rotation.in_service == []
        await rotation.close()

    asyncio.run(go())


def test_calls_wait_for_a_worker_to_come_back():
    async def go():
        gate = asyncio.Event()
        rotation, _ = _rotation(2, Reviver(gate=gate))
        rotation.lose(0)
        rotation.lose(1)
        waiting = asyncio.ensure_future(rotation.call(lambda w: w.work()))
        await asyncio.sleep(0.1)
        assert not waiting.done(), "with none in rotation the call waits"
        gate.set()
        assert await asyncio.wait_for(waiting, 1.0) in ("w0", "w1")
        await rotation.close()

    asyncio.run(go())


def test_calls_time_out_with_a_clear_error_when_none_comes_back():
    async def go():
        rotation, _ = _rotation(2, Reviver(*[NotStarted("restarting")] * 1000), wait_s=0.3)
        for w in rotation.workers:
            w.lost = True
        started = time.monotonic()
        with pytest.raises(NoWorkerInService, match=r"no fake worker in rotation for 0\.3 s"):
            await rotation.call(lambda w: w.work())
        assert 0.3 <= time.monotonic() - started < 1.0
        deadline = time.monotonic() + 0.1  # a caller's own deadline bounds the wait too
        with pytest.raises(NoWorkerInService):
            await rotation.pick(deadline=deadline)
        assert time.monotonic() - deadline < 0.2
        await rotation.close()

    asyncio.run(go())


def test_a_failing_revival_keeps_the_worker_out():
    async def go():
        revive = Reviver(NotStarted("restarting"), RuntimeError("the engine would not start"))
        rotation, events = _rotation(2, revive)
        rotation.lose(0)
        await _until(lambda: ("given_up", 0) in events)
        assert revive.attempts == 2 and rotation.in_service == [1]
        rotation.lose(0)  # out for good: no second revival
        await asyncio.sleep(0.05)
        assert revive.attempts == 2 and events == [("lost", 0), ("given_up", 0)]
        assert {await rotation.call(lambda w: w.work()) for _ in range(3)} == {"w1"}
        await rotation.close()

    asyncio.run(go())


def test_revival_gives_up_after_give_up_s_and_retries_attempts_that_time_out():
    async def go():
        rotation, events = _rotation(1, Reviver(*[NotStarted("restarting")] * 1000), give_up_s=0.2)
        rotation.lose(0)
        await _until(lambda: ("given_up", 0) in events)

        hangs = Reviver(gate=asyncio.Event())  # every attempt hangs until the probe timeout, then is tried again
        rotation, events = _rotation(1, hangs, probe_timeout_s=0.05)
        rotation.lose(0)
        await _until(lambda: hangs.attempts >= 3)
        assert events == [("lost", 0)]
        hangs.gate.set()
        await _until(lambda: events[-1] == ("back", 0))
        await rotation.close()

    asyncio.run(go())


def test_close_cancels_revivals_in_progress():
    async def go():
        rotation, events = _rotation(2, Reviver(gate=asyncio.Event()))
        rotation.lose(0)
        await asyncio.sleep(0.01)
        await rotation.close()
        await asyncio.sleep(0.05)
        assert rotation.in_service == [1] and events == [("lost", 0)]

    asyncio.run(go())
