"""Intervals for pass@1: how far a held-out figure, or the difference between two models, can be trusted.

The unit of resampling is the task, not the sample: samples of one task are correlated (an easy task passes
most of them), so resampling samples would make the interval too narrow. pass@1 is the mean over tasks of each
task's share of passing samples; its interval is a percentile bootstrap over tasks. A difference between two
evaluations on the same tasks is a *paired* bootstrap: each resample draws tasks and takes both models' rates on
them, so the spread between tasks (which both share) cancels and only the difference between the models remains.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from rlaif.errors import RlaifError
from rlaif.types import Trajectory

RESAMPLES = 10_000
LEVEL = 0.95


def task_pass_rates(trajectories: Iterable[Trajectory]) -> dict[str, float]:
    """Each task's share of graded samples with reward 1 (infrastructure failures are not samples)."""
    passed: dict[str, list[bool]] = {}
    for traj in trajectories:
        if traj.reward is not None and not traj.infra_error():
            passed.setdefault(traj.task_id, []).append(traj.reward.total == 1.0)
    return {task: sum(p) / len(p) for task, p in passed.items()}


def read_pass_rates(run: Path) -> dict[str, float]:
    """`task_pass_rates` of an `rlaif eval` output directory (its trajectories.jsonl)."""
    path = run / "trajectories.jsonl" if run.is_dir() else run
    if not path.is_file():
        raise RlaifError(f"{run} holds no trajectories.jsonl; pass an `rlaif eval` output directory (its --out)")
    with path.open() as lines:
        rates = task_pass_rates(Trajectory.model_validate(json.loads(line)) for line in lines if line.strip())
    if not rates:
        raise RlaifError(f"{path} has no graded episode; every one failed on infrastructure (see their errors)")
    return rates


def bootstrap_ci(rates: Mapping[str, float], seed: int = 0, resamples: int = RESAMPLES,
                 level: float = LEVEL) -> list[float]:
    """The percentile interval of the mean task pass rate, resampling tasks with replacement."""
    values = np.fromiter(rates.values(), dtype=float)
    if values.size == 0:
        raise RlaifError("no graded task to compute an interval from")
    draws = np.random.default_rng(seed).integers(0, values.size, size=(resamples, values.size))
    return _percentiles(values[draws].mean(axis=1), level)


def paired_ci(a: Mapping[str, float], b: Mapping[str, float], seed: int = 0, resamples: int = RESAMPLES,
              level: float = LEVEL) -> tuple[float, list[float], int]:
    """(b - a, its paired percentile interval, the number of tasks both evaluated) over the tasks in both."""
    shared = sorted(a.keys() & b.keys())
    if not shared:
        raise RlaifError("the two evaluations share no task; evaluate both on the same split and --limit")
    diff = np.array([b[t] - a[t] for t in shared])
    draws = np.random.default_rng(seed).integers(0, diff.size, size=(resamples, diff.size))
    return round(float(diff.mean()), 4), _percentiles(diff[draws].mean(axis=1), level), len(shared)


def _percentiles(means: np.ndarray, level: float) -> list[float]:
    tail = (1 - level) / 2 * 100
    return [round(float(v), 4) for v in np.percentile(means, [tail, 100 - tail])]


def show_interval(ci: list[float]) -> str:
    """`[0.412, 0.538]`, or signed (`[-0.031, +0.054]`) when it reaches below 0."""
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci[0] < 0 else f"[{ci[0]:.3f}, {ci[1]:.3f}]"
