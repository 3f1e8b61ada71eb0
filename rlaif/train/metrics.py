"""The figures of one training step: rewards by component, pass and truncation rates, answers a grader flagged,
staleness, judge cost, generation and grading time, and the learners' own figures combined across ranks."""

from __future__ import annotations

import math
from typing import Any

from rlaif.train.groups import ScoredGroup


def batch_metrics(batch: list[ScoredGroup], version: int) -> dict[str, float]:
    """Figures of a drawn batch at learner version `version`. `_generate_s` and `_reward_s` (mean seconds
    per episode) are for the caller to turn into phase timings."""
    trajs = [t for g in batch for t in g.trajectories]
    if not trajs:
        return {"_generate_s": 0.0, "_reward_s": 0.0}
    totals = [t.reward.total for t in trajs]
    mean = sum(totals) / len(totals)
    metrics: dict[str, float] = {
        "reward/mean": mean,
        "reward/std": math.sqrt(sum((x - mean) ** 2 for x in totals) / len(totals)),
        "pass_rate": sum(x >= 1.0 for x in totals) / len(totals),
        "truncated_rate": sum(t.status == "truncated" for t in trajs) / len(trajs),
        "completion_tokens": float(sum(len(turn.completion_ids) for t in trajs for turn in t.turns)),
        "staleness/mean": sum(version - g.version for g in batch) / len(batch),
        "staleness/max": float(max(version - g.version for g in batch)),
        "judge_cost_usd": sum(_cost(t.reward.details) for t in trajs),
        "reward/flagged": float(sum(_flagged(t.reward.details) for t in trajs)),
        "_generate_s": sum(t.timings.get("generate", 0.0) for t in trajs) / len(trajs),
        "_reward_s": sum(t.timings.get("reward", 0.0) for t in trajs) / len(trajs),
    }
    for name in {k for t in trajs for k in t.reward.components}:
        values = [v for v in (t.reward.components.get(name) for t in trajs) if v is not None]
        if values:
            metrics[f"reward/{name}"] = sum(values) / len(values)
    return metrics


def merge_ranks(parts: list[dict[str, float]]) -> dict[str, float]:
    """One step's metrics from every learner rank: sums of the per-shard figures, the slowest rank's
    `train_s`, and rank 0's `grad_norm`, `lr` and `updates` (identical on every rank after the all-reduce)."""
    same = {"grad_norm", "lr", "updates"}
    metrics = {k: v for k, v in parts[0].items() if k in same}
    for part in parts:
        for key, value in part.items():
            if key in same:
                continue
            metrics[key] = max(metrics.get(key, 0.0), value) if key == "train_s" else metrics.get(key, 0.0) + value
    return metrics


def _flagged(details: Any) -> bool:
    """Whether a grader flagged the answer (`flags`: a contradicting test stream; `suspicious`: it touches the test
    runner) anywhere in a reward's (nested) details: what in-process grading cannot rule out, made visible."""
    if isinstance(details, dict):
        return any((k in ("flags", "suspicious") and bool(v)) or _flagged(v) for k, v in details.items())
    return False


def _cost(details: Any) -> float:
    """Sum of every `cost_usd` in a reward's (nested) details."""
    if isinstance(details, dict):
        return sum(float(v) if k == "cost_usd" and isinstance(v, int | float) else _cost(v) for k, v in details.items())
    if isinstance(details, list):
        return sum(_cost(v) for v in details)
    return 0.0
