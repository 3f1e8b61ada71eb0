"""The run directory of a training run: everything a run writes goes through `RunDir`.

    <root>/<name>-<YYYYmmdd-HHMMSS>/
        config.yaml          the resolved config, as the run started
        metrics.jsonl        {"step", "time", **metrics} per `log_metrics`; non-finite values are null
        trajectories.jsonl   every trajectory, fsynced before anything uses it
        checkpoints/         written by the learner, not by this module
        tb/                  TensorBoard event files
        wandb/               W&B's local files, when a W&B project is set

Resume: a checkpoint records `offsets()`; `truncate(offsets)` rolls both JSONL files back to them (dropping a
partial last line left by a killed process) and makes TensorBoard forget every step after the last step left in
metrics.jsonl: the next event file starts with a purge marker at that step + 1, so TensorBoard shows each step
once, with the values of the resumed run. TensorBoard reads the event files of a directory in name order and a
name starts with its creation second, so a new file is never created in the second of the newest existing one
(it waits for the next second; in practice only tests create two in one second).

Not thread-safe: one process, one thread writes a run directory.
"""

from __future__ import annotations

import json
import math
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from rlaif.errors import RlaifError

JSONL_FILES = ("metrics.jsonl", "trajectories.jsonl")
EVENTS_PREFIX = "events.out.tfevents."


class RunDir:
    """A run directory; `create` for a new run, `open` to resume one. Call `close` when the run ends."""

    def __init__(self, path: Path, wandb_run: Any = None) -> None:
        self.path = path
        self._writer: Any = None  # torch.utils.tensorboard.SummaryWriter, made on the first log_metrics
        self._purge_step: int | None = None
        self._wandb = wandb_run

    @classmethod
    def create(cls, root: str | Path, name: str, config_yaml: str, wandb_project: str | None = None) -> RunDir:
        """New directory root/<name>-<YYYYmmdd-HHMMSS> (-2, -3 ... appended if taken) with config.yaml,
        checkpoints/ and tb/."""
        wandb = _import_wandb(wandb_project)  # before mkdir: a missing wandb leaves no directory behind
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        base = f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        path, n = root / base, 1
        while True:
            try:
                path.mkdir()
                break
            except FileExistsError:
                n += 1
                path = root / f"{base}-{n}"
        (path / "config.yaml").write_text(config_yaml)
        (path / "checkpoints").mkdir()
        (path / "tb").mkdir()
        return cls(path, _init_wandb(wandb, wandb_project, path))

    @classmethod
    def open(cls, path: str | Path, wandb_project: str | None = None) -> RunDir:
        """An existing run directory, to resume; RlaifError if it has no config.yaml."""
        path = Path(path)
        if not (path / "config.yaml").is_file():
            what = "does not exist" if not path.exists() else "is not a run directory (no config.yaml)"
            raise RlaifError(f"{path} {what}; pass a run directory made by a training run (<root>/<name>-<time>/)")
        (path / "checkpoints").mkdir(exist_ok=True)
        (path / "tb").mkdir(exist_ok=True)
        return cls(path, _init_wandb(_import_wandb(wandb_project), wandb_project, path))

    def log_metrics(self, step: int, metrics: dict[str, float | int]) -> None:
        """One line of metrics.jsonl (non-finite values as null), and each finite number as a TensorBoard scalar
        tagged by its key ("reward/mean": the slash groups it) at `step`, and to W&B when configured."""
        row = {"step": step, "time": time.time(), **metrics}
        row = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row, allow_nan=False) + "\n")
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        writer = self._tensorboard()
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, global_step=step)
        writer.flush()
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)

    def append_trajectories(self, rows: list[dict]) -> None:
        """Append rows (JSON-serialisable dicts) to trajectories.jsonl, one a line; on disk (fsynced) on return."""
        text = "".join(json.dumps(row) + "\n" for row in rows)  # serialise all first: a bad row writes nothing
        with open(self.path / "trajectories.jsonl", "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def offsets(self) -> dict[str, int]:
        """Byte sizes of metrics.jsonl and trajectories.jsonl (0 when absent), keyed by file name."""
        return {name: (self.path / name).stat().st_size if (self.path / name).exists() else 0 for name in JSONL_FILES}

    def truncate(self, offsets: dict[str, int]) -> None:
        """Roll the JSONL files back to `offsets` (from `offsets()` at a checkpoint) and drop TensorBoard steps
        after the last step left in metrics.jsonl; RlaifError if a file is shorter than its recorded offset."""
        for name in JSONL_FILES:
            file, size = self.path / name, offsets[name]
            have = file.stat().st_size if file.exists() else 0
            if have < size:
                raise RlaifError(
                    f"{file} has {have} bytes but the checkpoint recorded {size}: the run directory lost data "
                    "after the checkpoint; resume from an earlier checkpoint or start a new run"
                )
            if file.exists():
                os.truncate(file, size)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._purge_step = _last_step(self.path / "metrics.jsonl") + 1

    def close(self) -> None:
        """Flush and close the TensorBoard writer and finish the W&B run; the directory stays usable by `open`."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def _tensorboard(self) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            tb = self.path / "tb"
            newest = max((int(p.name.split(".")[3]) for p in tb.glob(EVENTS_PREFIX + "*")), default=0)
            if newest >= int(time.time()):
                time.sleep(max(0.0, newest + 1 - time.time()))
            self._writer = SummaryWriter(log_dir=str(tb), purge_step=self._purge_step)
            self._purge_step = None
        return self._writer


def _last_step(metrics: Path) -> int:
    """The step of the last line of metrics.jsonl; -1 when it has none."""
    if not metrics.exists():
        return -1
    lines = metrics.read_text(encoding="utf-8").splitlines()
    return json.loads(lines[-1])["step"] if lines else -1


def _import_wandb(project: str | None) -> Any:
    """The wandb module when a project is set (None otherwise); RlaifError if it is set but not installed."""
    if project is None:
        return None
    try:
        import wandb
    except ImportError:
        raise RlaifError("wandb_project is set but wandb is not installed: pip install wandb, or unset it") from None
    return wandb


def _init_wandb(wandb: Any, project: str | None, path: Path) -> Any:
    if wandb is None:
        return None
    config = yaml.safe_load((path / "config.yaml").read_text())
    return wandb.init(project=project, dir=str(path), config=config, mode=os.environ.get("WANDB_MODE", "online"))
