"""The trainer's run loop without Ray: stand-ins for the actors, groups scripted per task index.

What a draw does with stale groups and with draws that hold nothing to train on, and that the loop never waits on
the disk: a checkpoint is committed on the run directory's writer thread, a failed write ends the run."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from rlaif.errors import RlaifError
from rlaif.train import checkpoint
from rlaif.train.groups import ScoredGroup
from rlaif.train.trainer import Trainer
from tests.support.disk import Ticker, fill_disk, stall_fsync
from tests.test_trainer_unit import _trainer, _traj

pytestmark = pytest.mark.unit


class _Remote:
    """A Ray actor method's stand-in: `.remote(...)` returns an awaitable of the method's result."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def remote(self, *args: Any) -> Any:
        async def result() -> Any:
            return self.fn(*args)

        return result()


class _Actors:
    """RunActors' stand-in: a learner that counts the samples of each update, a fleet whose sync is instant."""

    def __init__(self) -> None:
        learner = SimpleNamespace(save=_Remote(lambda d: (Path(d) / checkpoint.LEARNER_FILE).write_bytes(b"w")),
                                  save_model=_Remote(lambda d: Path(d).mkdir()))
        self.learners = [learner]
        self.learner = learner
        self.fleet = SimpleNamespace(sync=self._sync)
        self.reward = SimpleNamespace(stats={}, ledger=SimpleNamespace(spend=self._spend))
        self.updates: list[int] = []
        self.syncs = 0

    async def _spend(self) -> dict[str, dict]:
        return {}

    async def _sync(self, version: int) -> None:
        self.syncs += 1

    async def learn(self, samples: list) -> dict[str, float]:
        self.updates.append(len(samples))
        return {"loss": 0.0}

    async def close(self) -> None:
        pass


def _scripted(trainer: Trainer, group: Callable[[int], ScoredGroup]) -> _Actors:
    """Stand-in actors for `trainer`, whose task number `index` yields `group(index)`."""
    async def generate(index: int) -> ScoredGroup:
        await asyncio.sleep(0)
        return group(index)

    trainer._generate_group = generate
    trainer.actors = _Actors()
    return trainer.actors


def _signal(index: int, version: int) -> ScoredGroup:
    return ScoredGroup(index, version, [_traj(1.0, version=version), _traj(0.0, version=version)])


def _no_signal(index: int, version: int) -> ScoredGroup:
    return ScoredGroup(index, version, [_traj(0.5, version=version), _traj(0.5, version=version)])


def _run(trainer: Trainer) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        try:
            return await asyncio.wait_for(trainer.run(), timeout=20)
        finally:
            await trainer.close()
            trainer.rundir.close()

    return asyncio.run(run())


def _metrics(trainer: Trainer) -> list[dict]:
    path = trainer.rundir.path / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_groups_found_stale_at_the_draw_are_replaced_and_the_batch_is_still_full(tmp_path):
    trainer = _trainer(tmp_path, "train.mode=sync", "learner.steps=2")
    lagging = {5, 6}  # a worker still on the weights of version 0 produced these, during step 2's generation
    actors = _scripted(trainer, lambda i: _signal(i, 0 if i in lagging else trainer.engine_version))
    _run(trainer)
    first, second = _metrics(trainer)
    assert sorted(first["trained_groups"]) == [0, 1, 2, 3]
    assert len(second["trained_groups"]) == 4 and not lagging & set(second["trained_groups"])
    assert second["dropped/stale"] == 2 and second["staleness/max"] == 0
    assert actors.updates == [8, 8]  # 4 groups of 2 episodes each time


def test_an_empty_draw_is_counted_and_is_not_a_step(tmp_path):
    trainer = _trainer(tmp_path, "train.mode=sync", "learner.steps=1", "learner.max_fill_rounds=2")

    def group(index: int) -> ScoredGroup:  # the first 8 tasks (one draw's fill budget) give no signal
        return _no_signal(index, trainer.engine_version) if index < 8 else _signal(index, trainer.engine_version)

    actors = _scripted(trainer, group)
    later = trainer._generate_group

    async def generate(index: int) -> ScoredGroup:
        while index >= 8 and not trainer.state.dropped["empty_draw"]:  # later tasks finish after the empty draw
            await asyncio.sleep(0.001)
        return await later(index)

    trainer._generate_group = generate
    summary = _run(trainer)
    (only,) = _metrics(trainer)
    assert summary["steps"] == trainer.state.step == 1 and trainer.state.version == 1
    assert only["step"] == 1 and only["version"] == 1 and only["dropped/empty_draw"] == 1
    assert actors.updates == [8] and actors.syncs == 1  # one update, one weight sync: the empty draw had neither
    assert trainer.state.dropped["no_signal"] >= 8


def test_max_fill_rounds_empty_draws_in_a_row_stop_the_run_naming_the_cause_and_the_fix(tmp_path):
    trainer = _trainer(tmp_path, "train.mode=sync", "learner.steps=5", "learner.max_fill_rounds=2")
    actors = _scripted(trainer, lambda i: _no_signal(i, trainer.engine_version))
    with pytest.raises(RlaifError) as err:
        _run(trainer)
    message = str(err.value)
    assert message.startswith("2 draws in a row held nothing to train on")
    assert "'no_signal'" in message and "rewards that never vary within a group give no signal" in message
    assert "rlaif env check" in message and "learner.dynamic_sampling=false" in message
    assert trainer.state.step == trainer.state.version == 0 and actors.updates == [] and actors.syncs == 0
    assert trainer.state.dropped["empty_draw"] == 2 and _metrics(trainer) == []


def test_a_checkpoint_is_committed_off_the_event_loop_behind_the_rows_it_records(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path)
    _scripted(trainer, lambda i: _signal(i, 0))
    trainer.state.buffer = [_signal(i, 0) for i in range(3)]
    trainer.rundir.append_trajectories([{"group_index": i} for i in range(3)])
    loop_thread, dumped_on = threading.current_thread(), []
    dumps = checkpoint.json.dumps

    def dumps_where(obj: Any, **kwargs: Any) -> str:
        dumped_on.append(threading.current_thread())
        return dumps(obj, **kwargs)

    monkeypatch.setattr(checkpoint.json, "dumps", dumps_where)
    entered, release = stall_fsync(monkeypatch)

    async def save() -> tuple[Path, int]:
        ticker = Ticker()
        ticker.start()
        saving = asyncio.create_task(trainer.save_checkpoint())
        while not entered.is_set():
            await asyncio.sleep(0.005)
        before = ticker.ticks
        await asyncio.sleep(0.1)
        ticked = ticker.ticks - before if not saving.done() else 0
        release.set()
        path = await saving
        ticker.stop()
        return path, ticked

    path, ticked = asyncio.run(save())
    trainer.rundir.close()
    assert ticked >= 5, "the loop stood still while the checkpoint was written"
    assert dumped_on and loop_thread not in dumped_on  # the JSON of the buffer was made on the writer thread
    assert checkpoint.latest(trainer.rundir.path) == path
    state = checkpoint.read_trainer_state(path)
    assert [g["index"] for g in state["buffer"]] == [0, 1, 2]
    rows = (trainer.rundir.path / "trajectories.jsonl").read_bytes()
    assert len(rows) == state["offsets"]["trajectories.jsonl"] and rows.count(b"\n") == 3


def test_a_failed_write_ends_the_run_with_its_error_instead_of_a_hang(tmp_path, monkeypatch):
    fill_disk(monkeypatch)
    trainer = _trainer(tmp_path, "learner.steps=3")
    _scripted(trainer, lambda i: _signal(i, trainer.engine_version))
    with pytest.raises(RlaifError, match=r"No space left on device.*rlaif train --resume"):
        _run(trainer)
