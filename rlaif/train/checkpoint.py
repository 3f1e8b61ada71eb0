"""Atomic checkpoints: a run killed at any instant resumes from its last complete checkpoint.

A checkpoint is a directory `checkpoints/step-NNNNNN/` holding `learner.pt` (weights or adapters, optimizer,
scheduler, RNG, version: written by the learner, which on a cluster means storage the driver also sees)
and `trainer.json` (written by the driver: step, data cursor, buffered groups not yet trained, the run
files' sizes, counters, RNG). Both are written into `.step-NNNNNN.tmp/`, flushed to disk, and the directory
is renamed into place; `latest` (a one-line file, replaced atomically) names the newest complete one. A crash
before the rename leaves a `.tmp` directory that the next save removes; a crash after it leaves a complete
checkpoint. Older checkpoints beyond `keep` are deleted only after a newer one is complete.

`commit` is all blocking disk work (the JSON of every buffered trajectory, fsyncs, renames): the trainer runs it on
the run directory's writer thread (`RunDir.after_writes`), behind the run files' bytes the checkpoint records.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from rlaif.errors import RlaifError

LEARNER_FILE, TRAINER_FILE, LATEST = "learner.pt", "trainer.json", "latest"


def staging_dir(run_path: Path, step: int) -> Path:
    """A fresh, empty staging directory for the checkpoint of `step` (what a crash left there is removed)."""
    tmp = run_path / "checkpoints" / f".step-{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def commit(staging: Path, trainer_state: dict[str, Any], *, keep: int = 2) -> Path:
    """Write trainer.json into `staging`, make it the latest checkpoint, prune old ones; returns its path.
    `trainer_state` is serialised here, so it must be a snapshot no one changes meanwhile."""
    if not (staging / LEARNER_FILE).exists():
        raise RlaifError(f"checkpoint {staging}: the learner wrote no {LEARNER_FILE}")
    _write_synced(staging / TRAINER_FILE, json.dumps(trainer_state).encode())
    for path in staging.iterdir():
        _fsync(path)
    final = staging.parent / staging.name.removeprefix(".").removesuffix(".tmp")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    _fsync(staging.parent)
    _write_synced(staging.parent / LATEST, final.name.encode(), atomic=True)
    for old in sorted(p for p in staging.parent.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(run_path: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    pointer = run_path / "checkpoints" / LATEST
    if not pointer.exists():
        return None
    path = pointer.parent / pointer.read_text().strip()
    return path if (path / TRAINER_FILE).exists() and (path / LEARNER_FILE).exists() else None


def read_trainer_state(path: Path) -> dict[str, Any]:
    return json.loads((path / TRAINER_FILE).read_text())


def _write_synced(path: Path, data: bytes, *, atomic: bool = False) -> None:
    target = path.with_name(path.name + ".new") if atomic else path
    with open(target, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if atomic:
        os.replace(target, path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
