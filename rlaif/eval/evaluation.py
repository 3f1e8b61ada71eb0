"""Running many episodes and grading them: the engine of `rlaif eval` and `rlaif env check`.

Episodes run concurrently (bounded); each trajectory is handed to `on_done` as soon as it is graded,
so callers append it to disk before anything else uses it. Infrastructure failures are counted as
skipped, by reason, and never enter pass rates.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

from rlaif.env import Environment, GradeContext
from rlaif.policies.endpoints import Policy, Sampling
from rlaif.rollout.agent import run_episode
from rlaif.types import RewardResult, Task, Trajectory
from rlaif_rewards.components import grade


async def run_and_grade(env: Environment, task: Task, policy: Policy, ctx: GradeContext, sampling: Sampling,
                        group_id: str | None = None) -> Trajectory:
    """One episode, graded. `reward` is None only when the episode itself failed (status infra_error)."""
    traj, submission = await run_episode(env, task, policy, ctx.pools, sampling, group_id=group_id)
    if submission is not None:
        traj.reward = await grade(env, task, submission, ctx)
    return traj


async def evaluate(env: Environment, tasks: list[Task], make_policy: Callable[[Task], Policy], ctx: GradeContext,
                   sampling: Sampling, *, samples: int = 1, concurrency: int = 8,
                   on_done: Callable[[Trajectory], None] = lambda t: None) -> list[Trajectory]:
    """`samples` graded episodes per task, at most `concurrency` at once, each passed to `on_done`."""
    slots = asyncio.Semaphore(concurrency)

    async def one(task: Task, index: int) -> Trajectory:
        async with slots:
            traj = await run_and_grade(env, task, make_policy(task), ctx, sampling, group_id=f"{task.id}#{index}")
        on_done(traj)
        return traj

    return await asyncio.gather(*(one(task, i) for task in tasks for i in range(samples)))


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimate from n samples of which c passed (Chen et al., 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def summarize(trajectories: list[Trajectory], k: int) -> dict[str, Any]:
    """pass@1, pass@k (a sample passes when its reward is 1), mean reward, and what was skipped, by reason."""
    by_task: dict[str, list[RewardResult]] = {}
    skipped: Counter[str] = Counter()
    for traj in trajectories:
        reason = traj.infra_error()
        if reason:
            skipped[reason] += 1
        else:
            by_task.setdefault(traj.task_id, []).append(traj.reward)
    scored = [r for rewards in by_task.values() for r in rewards]
    summary: dict[str, Any] = {
        "tasks": len({t.task_id for t in trajectories}),
        "episodes": len(trajectories),
        "graded": len(scored),
        "skipped": dict(skipped),
        "mean_reward": sum(r.total for r in scored) / len(scored) if scored else None,
    }
    for kk in sorted({1, k}):
        rates = [pass_at_k(len(rs), sum(r.total == 1.0 for r in rs), kk) for rs in by_task.values() if len(rs) >= kk]
        summary[f"pass@{kk}"] = sum(rates) / len(rates) if rates else None
    return summary
