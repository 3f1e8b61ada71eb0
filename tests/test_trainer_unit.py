"""The orchestrator's rules, without Ray: admission (staleness), drops, samples, the data stream, CLI errors."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from rlaif.core.config import dump_config, load_config
from rlaif.train.groups import ScoredGroup
from rlaif.train.rundir import RunDir
from rlaif.train.samples import build_samples
from rlaif.train.trainer import Trainer
from rlaif.types import RewardResult, Trajectory, Turn

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parent.parent


def _trainer(tmp_path: Path, *overrides: str) -> Trainer:
    config = load_config(None, ["model.path=models/tiny", "env.name=tests.envs.digits:Digits",
                                "learner.batch_tasks=4", "rollout.group_size=2", *overrides])
    return Trainer(config, RunDir.create(tmp_path, "t", dump_config(config)))


def _traj(total: float | None, *, status: str = "ok", version: int = 0, turns: int = 1) -> Trajectory:
    reward = RewardResult(total=total) if total is not None else RewardResult(status="infra_error")
    turn = Turn(prompt_ids=[1, 2], completion_ids=[3, 4, 5], logprobs=[-1.0, -1.0, -1.0], loss_mask=[1, 1, 1])
    return Trajectory(id=f"t{total}", task_id="x", status=status, weight_version=version, reward=reward,
                      turns=[turn] * turns)


def _admitted(trainer: Trainer) -> int:
    count = 0
    while trainer._may_admit():
        trainer.inflight[count] = None
        count += 1
    return count


def test_sync_mode_admits_one_batch_and_nothing_while_training(tmp_path):
    trainer = _trainer(tmp_path, "train.mode=sync")
    assert _admitted(trainer) == 4
    trainer.inflight.clear()
    trainer.training = 1  # a batch drawn from version 0 is training: the next one would train on version 1
    assert _admitted(trainer) == 0
    trainer.training, trainer.state.version, trainer.engine_version = 0, 1, 0  # trained, weights not yet out
    assert _admitted(trainer) == 0
    trainer.engine_version = 1
    assert _admitted(trainer) == 4


def test_async_mode_runs_max_staleness_versions_ahead(tmp_path):
    trainer = _trainer(tmp_path, "train.mode=async", "train.max_staleness=2")
    assert _admitted(trainer) == 12  # batches for versions 0, 1 and 2, all from the engines' version 0
    trainer.inflight.clear()
    trainer.training = 1
    assert _admitted(trainer) == 8


def test_no_group_is_admitted_for_a_step_past_the_last(tmp_path):
    """Two steps left of three, async two versions ahead: two batches' worth, not three; a dropped group's slot is
    refilled; once the last batch is drawn, nothing more starts."""
    trainer = _trainer(tmp_path, "train.mode=async", "train.max_staleness=2", "learner.steps=3")
    trainer.state.step = trainer.state.version = trainer.engine_version = 1
    assert _admitted(trainer) == 8
    del trainer.inflight[0]  # dropped (no signal, say): its batch is one short again
    assert _admitted(trainer) == 1
    trainer.inflight.clear()
    trainer.state.step = trainer.state.version = trainer.engine_version = 2
    trainer.training = 1
    assert _admitted(trainer) == 0


def test_sync_every_k_allows_k_minus_one_versions_of_lag(tmp_path):
    assert _trainer(tmp_path, "train.mode=sync", "train.sync_every=3").max_staleness == 2


def test_groups_with_an_infrastructure_failure_or_no_signal_are_dropped(tmp_path):
    dynamic = _trainer(tmp_path).config.learner.dynamic_sampling
    assert ScoredGroup(0, 0, [_traj(1.0), _traj(0.0)]).drop_reason(dynamic) is None
    assert ScoredGroup(0, 0, [_traj(1.0), _traj(None)]).drop_reason(dynamic) == "infra_error"
    assert ScoredGroup(0, 0, [_traj(1.0), _traj(0.0, status="infra_error")]).drop_reason(dynamic) == "infra_error"
    assert ScoredGroup(0, 0, [_traj(0.5), _traj(0.5)]).drop_reason(dynamic) == "no_signal"
    kept = _trainer(tmp_path, "learner.dynamic_sampling=false").config.learner.dynamic_sampling
    assert ScoredGroup(0, 0, [_traj(0.5), _traj(0.5)]).drop_reason(kept) is None


def test_a_group_staler_than_allowed_is_dropped_when_drawn_and_replaced(tmp_path):
    trainer = _trainer(tmp_path, "train.mode=async", "train.max_staleness=1", "learner.batch_tasks=2")
    trainer.state.version = 2
    trainer.state.buffer = [ScoredGroup(0, 0, [_traj(1.0), _traj(0.0)]), ScoredGroup(1, 1, [_traj(1.0), _traj(0.0)])]

    async def draw() -> list[ScoredGroup]:
        drawing = asyncio.create_task(trainer._next_batch())
        await asyncio.sleep(0.05)
        assert not drawing.done(), "one fresh group is not a batch: it waits for a replacement"
        trainer.state.buffer.append(ScoredGroup(2, 2, [_traj(1.0), _traj(0.0)]))
        trainer.finished_since_draw += 1
        trainer.changed.set()
        return await drawing

    batch = asyncio.run(draw())
    assert [g.index for g in batch] == [1, 2] and trainer.state.dropped["stale"] == 1
    trainer.state.buffer = [ScoredGroup(3, 0, [_traj(1.0), _traj(0.0)]), ScoredGroup(4, 3, [_traj(1.0), _traj(0.0)])]
    trainer.finished_since_draw = 2 * trainer.config.learner.max_fill_rounds  # the fill budget is spent
    assert [g.index for g in asyncio.run(trainer._next_batch())] == [4] and trainer.state.dropped["stale"] == 2


def test_samples_carry_group_advantages_and_mask_truncated_episodes(tmp_path):
    group = ScoredGroup(0, 0, [_traj(1.0, turns=2), _traj(0.0, status="truncated")])
    samples = build_samples([group], 2, scale_rewards=True, mask_truncated=True)
    assert len(samples) == 3  # two turns that do not continue each other (two sequences), one of the second
    assert samples[0].advantage == samples[1].advantage > 0 > samples[2].advantage
    assert samples[0].loss_mask == [1, 1, 1] and samples[2].loss_mask == [0, 0, 0]
    unmasked = build_samples([group], 2, scale_rewards=True, mask_truncated=False)
    assert unmasked[2].loss_mask == [1, 1, 1]


def test_the_task_stream_visits_every_task_once_per_epoch_and_is_reproducible(tmp_path):
    trainer = _trainer(tmp_path)
    n = len(trainer.tasks)
    first = [trainer.task_at(i).id for i in range(n)]
    second = [trainer.task_at(i).id for i in range(n, 2 * n)]
    assert sorted(first) == sorted(second) == sorted(t.id for t in trainer.tasks) and first != second
    assert first == [_trainer(tmp_path).task_at(i).id for i in range(n)]


def test_tasks_without_signal_are_passed_over_for_the_next_epochs_then_come_back(tmp_path):
    trainer = _trainer(tmp_path, "learner.skip_no_signal_epochs=1")
    n = len(trainer.tasks)
    flat = {trainer.task_at(i).id for i in range(0, n, 2)}  # half the tasks: every sample gets the same reward

    async def generate(index: int) -> ScoredGroup:
        task = trainer.task_at(index)
        rewards = [0.5, 0.5] if task.id in flat else [1.0, 0.0]
        return ScoredGroup(index, 0, [_traj(r).model_copy(update={"task_id": task.id}) for r in rewards])

    async def produce(count: int) -> list[str]:
        ids = []
        for _ in range(count):
            index = trainer._next_index()
            trainer.inflight[index] = None
            await trainer._produce(index)
            ids.append(trainer.task_at(index).id)
        return ids

    trainer._generate_group = generate
    assert sorted(asyncio.run(produce(n))) == sorted(t.id for t in trainer.tasks)  # epoch 0: all of them
    assert set(asyncio.run(produce(n - len(flat)))) == {t.id for t in trainer.tasks} - flat  # epoch 1: not `flat`
    assert trainer.step_stats["skipped/no_signal"] == len(flat)
    assert sorted(asyncio.run(produce(n))) == sorted(t.id for t in trainer.tasks)  # epoch 2: back
    assert len(trainer.state.buffer) == 2 * n - len(flat) and trainer.state.dropped["no_signal"] == 2 * len(flat)


def _rlaif(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlaif.cli", *args], capture_output=True, text=True, cwd=REPO)


@pytest.mark.parametrize(("args", "message"), [
    (["train"], "error: no config file: run `rlaif train CONFIG"),
    (["train", "--resume", "/nonexistent"], "error: /nonexistent is not a run directory"),
    (["train", "examples/cpu-tiny.yaml", "learner.stpes=3"], "did you mean 'learner.steps'"),
    (["report", "/nonexistent"], "error: /nonexistent: no metrics.jsonl"),
])
def test_train_and_report_reject_bad_input_with_one_line(args, message):
    done = _rlaif(*args)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_example_configs_are_valid():
    for example in (REPO / "examples").glob("*.yaml"):
        load_config(example)
