"""Running many episodes and grading them: the engine of `rlaif eval` and `rlaif env check`.

Episodes run concurrently (bounded); each trajectory is handed to `on_done` as soon as it is graded,
so callers append it to disk before anything else uses it. Infrastructure failures are counted as
skipped, by reason, and never enter pass rates; `check_skipped` turns too many of them into an error.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from rlaif.env import Environment, GradeContext
from rlaif.errors import RlaifError
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
            traj = await run_and_grade(env, task, make_policy(task), ctx, episode_sampling(sampling, task.id, index),
                                       group_id=f"{task.id}#{index}")
        on_done(traj)
        return traj

    return await asyncio.gather(*(one(task, i) for task in tasks for i in range(samples)))


def episode_sampling(sampling: Sampling, task_id: str, index: int) -> Sampling:
    """With a seed, each episode gets its own, derived from the task and the sample's index: its tokens then do not
    depend on which other requests share the engine's batch, or in which order they finish."""
    if sampling.seed is None:
        return sampling
    digest = hashlib.sha256(f"{sampling.seed}:{task_id}:{index}".encode()).digest()
    return sampling.model_copy(update={"seed": int.from_bytes(digest[:4], "big")})


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


def check_skipped(skipped: Mapping[str, int], total: int, max_skipped: float, fix: str,
                  noun: str = "episode") -> str | None:
    """A note on the `total` episodes (or attempts) of which `skipped` (counts by reason, first reason first)
    failed on infrastructure: None when none did. Raises RlaifError when every one did, whatever `max_skipped`
    says (nothing was graded, so nothing a command reports means anything), or when the skipped share exceeds
    `max_skipped`. `fix` ends the error unless the first reason names its own (`...; build it ...`)."""
    count = sum(skipped.values())
    if not count:
        return None
    first = next(iter(skipped))
    fix = "" if ";" in first else f"; {fix}"
    if count == total:
        raise RlaifError(f"every {noun} failed on infrastructure ({count} of {total}), the first: {first}{fix}")
    share = count / total
    if share > max_skipped:
        raise RlaifError(f"{count} of {total} {noun}s ({share:.0%}) failed on infrastructure, more than "
                         f"--max-skipped {max_skipped:g}; the first: {first}{fix}")
    return f"skipped {count} of {total} {noun}s ({share:.0%}) on infrastructure; the first: {first}"


def infra_fix(reason: str, option: str = "--policy") -> str:
    """What to check for the infrastructure failure `reason`, in a command whose model endpoint `option` names."""
    if "policy endpoint" in reason:
        return f"check that the {option} server is running and answers at that address"
    if reason.startswith("grading:"):
        return "check the sandbox backend (`rlaif sandbox run -- true`) and the judges of --config"
    return "see each episode's error in trajectories.jsonl"
