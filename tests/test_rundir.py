"""The run directory: config snapshot, JSONL logs that survive a kill, TensorBoard scalars that resume cleanly."""

import json
import math
import sys
import time
from datetime import datetime

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlaif.errors import RlaifError
from rlaif.train import rundir
from rlaif.train.rundir import RunDir

pytestmark = pytest.mark.unit
CONFIG = "model:\n  path: models/tiny\nlearner:\n  lr: 0.001\n"


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _scalars(run: RunDir, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run.path / "tb"))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_create_snapshots_config_and_makes_unique_dirs_within_one_second(tmp_path, monkeypatch):
    class FrozenClock(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2025, 1, 2, 3, 4, 5)

    monkeypatch.setattr(rundir, "datetime", FrozenClock)
    first = RunDir.create(tmp_path / "runs", "grpo", CONFIG)
    second = RunDir.create(tmp_path / "runs", "grpo", CONFIG)
    third = RunDir.create(tmp_path / "runs", "grpo", CONFIG)

    assert [r.path.name for r in (first, second, third)] == [
        "grpo-20250102-030405", "grpo-20250102-030405-2", "grpo-20250102-030405-3"]
    assert (first.path / "config.yaml").read_text() == CONFIG
    assert (first.path / "checkpoints").is_dir()
    assert (first.path / "tb").is_dir()


def test_open_finds_an_existing_run(tmp_path):
    created = RunDir.create(tmp_path, "grpo", CONFIG)
    assert RunDir.open(created.path).path == created.path


@pytest.mark.parametrize("make_dir", [True, False])
def test_open_of_a_non_run_directory_is_one_line_naming_the_path(tmp_path, make_dir):
    path = tmp_path / "not-a-run"
    if make_dir:
        path.mkdir()
    with pytest.raises(RlaifError) as err:
        RunDir.open(path)
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message
    assert "run directory" in message


def test_log_metrics_appends_jsonl_and_tensorboard_scalars(tmp_path):
    run = RunDir.create(tmp_path, "grpo", CONFIG)
    for step in range(3):
        run.log_metrics(step, {"reward/mean": 0.5 * step, "loss/policy": -float(step), "tokens": 100 + step})
    run.close()

    lines = _lines(run.path / "metrics.jsonl")
    assert [line["step"] for line in lines] == [0, 1, 2]
    assert lines[2]["reward/mean"] == 1.0
    assert lines[2]["tokens"] == 102
    assert all(isinstance(line["time"], float) for line in lines)
    assert _scalars(run, "reward/mean") == [(0, 0.0), (1, 0.5), (2, 1.0)]
    assert _scalars(run, "loss/policy") == [(0, 0.0), (1, -1.0), (2, -2.0)]
    assert _scalars(run, "tokens") == [(0, 100.0), (1, 101.0), (2, 102.0)]


def test_non_finite_metrics_are_null_in_jsonl_and_absent_from_tensorboard(tmp_path):
    run = RunDir.create(tmp_path, "grpo", CONFIG)
    run.log_metrics(7, {"loss": math.nan, "grad_norm": math.inf, "reward/mean": 0.25})
    run.close()

    (line,) = _lines(run.path / "metrics.jsonl")
    assert line["loss"] is None
    assert line["grad_norm"] is None
    assert line["reward/mean"] == 0.25
    events = EventAccumulator(str(run.path / "tb"))
    events.Reload()
    assert events.Tags()["scalars"] == ["reward/mean"]


def test_truncate_rolls_trajectories_back_to_a_checkpoint_dropping_a_partial_line(tmp_path):
    run = RunDir.create(tmp_path, "grpo", CONFIG)
    assert run.offsets() == {"metrics.jsonl": 0, "trajectories.jsonl": 0}
    run.append_trajectories([{"id": 0, "reward": 1.0}, {"id": 1, "reward": 0.0}])
    checkpoint = run.offsets()
    run.append_trajectories([{"id": 2, "reward": 0.5}])
    run.after_writes(lambda: None).result()  # what was handed over is written, then
    with open(run.path / "trajectories.jsonl", "a") as f:
        f.write('{"id": 3, "rew')  # the writer is killed mid-write

    run.truncate(checkpoint)
    assert run.offsets() == checkpoint
    run.append_trajectories([{"id": 2, "reward": 0.75}])
    run.close()

    assert _lines(run.path / "trajectories.jsonl") == [
        {"id": 0, "reward": 1.0}, {"id": 1, "reward": 0.0}, {"id": 2, "reward": 0.75}]


def test_truncate_refuses_a_file_shorter_than_the_checkpoint_recorded(tmp_path):
    run = RunDir.create(tmp_path, "grpo", CONFIG)
    run.append_trajectories([{"id": 0}])
    with pytest.raises(RlaifError, match=r"trajectories\.jsonl has 10 bytes but the checkpoint recorded 99"):
        run.truncate({"metrics.jsonl": 0, "trajectories.jsonl": 99})


def test_a_bad_trajectory_row_writes_nothing(tmp_path):
    run = RunDir.create(tmp_path, "grpo", CONFIG)
    with pytest.raises(TypeError):
        run.append_trajectories([{"id": 0}, {"id": object()}])
    assert run.offsets()["trajectories.jsonl"] == 0


def test_resume_after_truncate_shows_each_step_once_with_the_new_values(tmp_path):
    run = RunDir.create(tmp_path, "grpo", CONFIG)
    run.log_metrics(0, {"reward/mean": 0.0})
    run.log_metrics(1, {"reward/mean": 1.0})
    checkpoint = run.offsets()
    run.log_metrics(2, {"reward/mean": 2.0})
    run.log_metrics(3, {"reward/mean": 3.0})
    run.after_writes(lambda: None).result()
    with open(run.path / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "ti')  # the writer is killed mid-write
    run.close()

    resumed = RunDir.open(run.path)
    resumed.truncate(checkpoint)
    resumed.log_metrics(2, {"reward/mean": 20.0})
    resumed.log_metrics(3, {"reward/mean": 30.0})
    resumed.close()

    assert [(line["step"], line["reward/mean"]) for line in _lines(run.path / "metrics.jsonl")] == [
        (0, 0.0), (1, 1.0), (2, 20.0), (3, 30.0)]
    assert _scalars(resumed, "reward/mean") == [(0, 0.0), (1, 1.0), (2, 20.0), (3, 30.0)]


@pytest.mark.parametrize("how", ["create", "open"])
def test_wandb_project_without_wandb_installed_is_one_line_naming_the_fix(tmp_path, monkeypatch, how):
    existing = RunDir.create(tmp_path, "grpo", CONFIG).path
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError, installed or not
    with pytest.raises(RlaifError) as err:
        if how == "create":
            RunDir.create(tmp_path, "other", CONFIG, wandb_project="rlaif")
        else:
            RunDir.open(existing, wandb_project="rlaif")
    assert str(err.value) == "wandb_project is set but wandb is not installed: pip install wandb, or unset it"
    assert [p.name for p in tmp_path.iterdir()] == [existing.name]  # no half-made run directory left behind


def test_a_new_event_file_sorts_after_one_made_in_the_same_second(tmp_path):
    run = RunDir.create(tmp_path, "grpo", CONFIG)
    same_second = run.path / "tb" / f"events.out.tfevents.{int(time.time()):010d}.zzz.99999.99"
    same_second.write_bytes(b"")  # would sort after the new file, so TensorBoard would read it last
    run.log_metrics(0, {"reward/mean": 1.0})
    run.close()

    newest = max(p.name for p in (run.path / "tb").iterdir())
    assert newest != same_second.name
    assert int(newest.split(".")[3]) > int(same_second.name.split(".")[3])
