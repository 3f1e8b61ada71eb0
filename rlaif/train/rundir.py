"""The run directory of a training run: everything a run writes goes through `RunDir`.

    <root>/<name>-<YYYYmmdd-HHMMSS>/
        config.yaml          the resolved config, as the run started
        metrics.jsonl        {"step", "time", **metrics} per `log_metrics`; non-finite values are null
        trajectories.jsonl   every trajectory, fsynced before a checkpoint that records it is complete
        checkpoints/         written by the learner, not by this module
        tb/                  TensorBoard event files
        wandb/               W&B's local files, when a W&B project is set

Resume: a checkpoint records `offsets()`; `truncate(offsets)` rolls both JSONL files back to them (dropping a
partial last line left by a killed process) and makes TensorBoard forget every step after the last step left in
metrics.jsonl: the next event file starts with a purge marker at that step + 1, so TensorBoard shows each step
once, with the values of the resumed run. TensorBoard reads the event files of a directory in name order and a
name starts with its creation second, so a new file is never created in the second of the newest existing one
(it waits for the next second; in practice only tests create two in one second).

Writes never block the caller: `log_metrics` and `append_trajectories` serialise on the calling thread (a bad row
raises there and writes nothing) and hand the bytes to the directory's one writer thread, which writes (and for
trajectories fsyncs) them in the order they came. `offsets()` counts what was handed over, so a checkpoint records
it at once; the checkpoint itself is committed through `after_writes`, behind those bytes on the same thread, so it
is complete only once the files hold what it records. The caller waits on disk only where it asks to: a future from
`after_writes`, `truncate` and `close`. A write that fails stops the writer, since what came after it would leave a
gap: the next call raises the failure (`close` does, if no call did). A process that dies loses what was still
queued, as a kill loses what it had not written: resume rolls back to the last complete checkpoint either way.

Not thread-safe: one thread (the trainer's event loop) calls a RunDir; its writer thread is its own.
"""

from __future__ import annotations

import json
import math
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import yaml

from rlaif.errors import RlaifError

JSONL_FILES = ("metrics.jsonl", "trajectories.jsonl")
EVENTS_PREFIX = "events.out.tfevents."
T = TypeVar("T")


class RunDir:
    """A run directory; `create` for a new run, `open` to resume one. Call `close` when the run ends: writes still
    queued are done only then."""

    def __init__(self, path: Path, wandb_run: Any = None) -> None:
        self.path = path
        self._tb: Any = None  # torch.utils.tensorboard.SummaryWriter, made and used on the writer thread
        self._purge_step: int | None = None
        self._wandb = wandb_run
        self._disk = _DiskWriter(path)
        self._sizes = {name: _size(path / name) for name in JSONL_FILES}  # with every write handed over done

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
        line = (json.dumps(row, allow_nan=False) + "\n").encode()
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        self._disk.write(partial(self._write_metrics, step, line, scalars))
        self._sizes["metrics.jsonl"] += len(line)
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)

    def append_trajectories(self, rows: list[dict]) -> None:
        """Append rows (JSON-serialisable dicts) to trajectories.jsonl, one a line, fsynced on the writer thread."""
        data = "".join(json.dumps(row) + "\n" for row in rows).encode()  # all first: a bad row writes nothing
        self._disk.write(partial(_append_synced, self.path / "trajectories.jsonl", data))
        self._sizes["trajectories.jsonl"] += len(data)

    def offsets(self) -> dict[str, int]:
        """Byte sizes of metrics.jsonl and trajectories.jsonl once the writes handed over so far are done (0 when
        absent), keyed by file name: what a checkpoint records, known without waiting for the disk."""
        return dict(self._sizes)

    def after_writes(self, fn: Callable[[], T]) -> Future[T]:
        """Run `fn` on the writer thread once every write handed over before it is done; the future (await it with
        `asyncio.wrap_future`) holds its result or its error. A checkpoint is committed this way, behind the run
        files' bytes it records."""
        return self._disk.call(fn)

    def truncate(self, offsets: dict[str, int]) -> None:
        """Roll the JSONL files back to `offsets` (from `offsets()` at a checkpoint) and drop TensorBoard steps
        after the last step left in metrics.jsonl; RlaifError if a file is shorter than its recorded offset. Waits for
        the writes handed over before it."""
        self._disk.call(partial(self._truncate, dict(offsets))).result()
        self._sizes = {name: offsets[name] for name in JSONL_FILES}

    def close(self) -> None:
        """Finish the writes handed over (raising the writer's failure if no call has), close the TensorBoard writer
        and finish the W&B run; the directory stays usable by `open`."""
        try:
            self._disk.close()
        finally:
            if self._tb is not None:  # the writer thread has stopped: nothing else touches it now
                self._tb.close()
                self._tb = None
            if self._wandb is not None:
                self._wandb.finish()
                self._wandb = None

    # ---- on the writer thread ----------------------------------------------------------------------------
    def _write_metrics(self, step: int, line: bytes, scalars: dict[str, float | int]) -> None:
        with open(self.path / "metrics.jsonl", "ab") as f:
            f.write(line)
        writer = self._tensorboard()
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, global_step=step)
        writer.flush()

    def _truncate(self, offsets: dict[str, int]) -> None:
        for name in JSONL_FILES:
            file, size = self.path / name, offsets[name]
            have = _size(file)
            if have < size:
                raise RlaifError(
                    f"{file} has {have} bytes but the checkpoint recorded {size}: the run directory lost data "
                    "after the checkpoint; resume from an earlier checkpoint or start a new run"
                )
            if file.exists():
                os.truncate(file, size)
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        self._purge_step = _last_step(self.path / "metrics.jsonl") + 1

    def _tensorboard(self) -> Any:
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            tb = self.path / "tb"
            newest = max((int(p.name.split(".")[3]) for p in tb.glob(EVENTS_PREFIX + "*")), default=0)
            if newest >= int(time.time()):
                time.sleep(max(0.0, newest + 1 - time.time()))
            self._tb = SummaryWriter(log_dir=str(tb), purge_step=self._purge_step)
            self._purge_step = None
        return self._tb


class _DiskWriter:
    """The one thread that does a run directory's disk work, in the order it was handed over; started on the
    first job, stopped by `close` (a later job starts it again).

    `write` hands over work nobody waits for: when it fails, the writer stops doing anything (what came after it
    would leave a gap in a file whose offsets a checkpoint records) and every later call raises the failure. `call`
    hands over work whose result or error its future carries; its failure stops nothing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._jobs: queue.SimpleQueue[tuple[Future | None, Callable[[], Any]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._reported = False

    def write(self, fn: Callable[[], Any]) -> None:
        self._submit(None, fn)

    def call(self, fn: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        self._submit(future, fn)
        return future

    def close(self) -> None:
        """Wait for every job handed over; raise the failure of a `write` if no call has raised it yet."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None
        if not self._reported:
            self._raise_failure()

    def _submit(self, future: Future | None, fn: Callable[[], Any]) -> None:
        self._raise_failure()
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=f"rundir-writer:{self.path.name}", daemon=True)
            self._thread.start()
        self._jobs.put((future, fn))

    def _raise_failure(self) -> None:
        if self._failure is not None:
            self._reported = True
            raise self._error() from self._failure

    def _error(self) -> RlaifError:
        err = self._failure
        return RlaifError(f"writing the run directory {self.path} failed ({type(err).__name__}: {err}); what the last "
                          "checkpoint records is on disk: fix the cause (disk space, permissions) and continue with "
                          f"`rlaif train --resume {self.path}`")

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn = job
            if future is not None and not future.set_running_or_notify_cancel():
                continue  # cancelled before it ran
            if self._failure is not None:
                if future is not None:
                    future.set_exception(self._error())
                continue
            try:
                result = fn()
            except BaseException as err:
                if future is None:
                    self._failure = err
                else:
                    future.set_exception(err)
            else:
                if future is not None:
                    future.set_result(result)


def _append_synced(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


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
