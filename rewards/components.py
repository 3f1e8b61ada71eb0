"""Reward components an environment does not declare but config can add: a judge, a format check, a length
penalty. With the environment's own graders they form a task's reward (`grade`): the weighted mean of named
components, each kept on the trajectory. A component may be gated on another (`gate`): it runs only when that
component scored at least `gate_threshold`, and scores 0 otherwise (e.g. judge only code that passes its tests).

A judge in `group` mode scores the answers of a GRPO group against each other, so the trainer grades a finished
group at once (`grade_group`) when `group_judged` says a task's reward has such a judge.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from typing import Any

from rlaif.core.config import ComponentConfig, JudgeConfig
from rlaif.env import Environment, GradeContext, Grader, Submission
from rlaif.errors import RlaifError
from rlaif.types import RewardResult, Task
from rlaif_rewards.rubric import Rubric, RubricJudge


class FormatCheck(Grader):
    """1 when the final answer matches a regular expression (e.g. a fenced code block), else 0."""

    def __init__(self, pattern: str, name: str = "format", weight: float = 1.0) -> None:
        self.pattern, self.name, self.weight = re.compile(pattern, re.S), name, weight

    async def grade(self, task: Task, submission: Submission, ctx: GradeContext) -> RewardResult:
        score = float(bool(self.pattern.search(submission.answer)))
        return RewardResult(total=score, components={self.name: score})


class LengthPenalty(Grader):
    """1 up to `max_chars` characters of final answer, falling linearly to 0 at twice that."""

    def __init__(self, max_chars: int, name: str = "length", weight: float = 1.0) -> None:
        self.max_chars, self.name, self.weight = max_chars, name, weight

    async def grade(self, task: Task, submission: Submission, ctx: GradeContext) -> RewardResult:
        over = max(0, len(submission.answer) - self.max_chars)
        score = max(0.0, 1.0 - over / self.max_chars)
        return RewardResult(total=score, components={self.name: score}, details={"chars": len(submission.answer)})


def configured_graders(components: list[ComponentConfig], task: Task) -> list[Grader]:
    """The graders config adds to a task, in order, with their weights and gates."""
    graders: list[Grader] = []
    for spec in components:
        if spec.kind == "judge":
            rubric = Rubric.model_validate(task.data["rubric"]) if "rubric" in task.data else None
            grader: Grader = RubricJudge(rubric, task.reference, judge=spec.judge, weight=spec.weight)
        elif spec.kind == "format":
            if not spec.pattern:
                raise RlaifError(f"reward component {spec.name!r} of kind format needs a pattern")
            grader = FormatCheck(spec.pattern, weight=spec.weight)
        else:
            grader = LengthPenalty(spec.max_chars, weight=spec.weight)
        grader.name = spec.name or spec.kind
        grader.gate, grader.gate_threshold = spec.gate, spec.gate_threshold
        graders.append(grader)
    return graders


def group_judged(components: Iterable[ComponentConfig | Grader],
                 judges: Mapping[str, Any] | Iterable[JudgeConfig]) -> bool:
    """Whether any judge component (a `kind: judge` ComponentConfig, or an environment's `RubricJudge`) uses a
    `group`-mode judge, so the reward needs the whole GRPO group (`grade_group`). `judges`: the `Judge`s by name
    (`GradeContext.judges`) or `reward.judges` configs. Environments' graders count only when passed in, e.g.
    `[*env.graders(task), *reward.components]`."""
    configs = [j.config for j in judges.values()] if isinstance(judges, Mapping) else list(judges)
    group = {c.name for c in configs if c.mode == "group"}
    return any(c.judge in group for c in components
               if isinstance(c, RubricJudge) or (isinstance(c, ComponentConfig) and c.kind == "judge"))


async def grade(env: Environment, task: Task, submission: Submission, ctx: GradeContext) -> RewardResult:
    """The weighted mean of the environment's graders and the components config adds (`ctx.components`).

    Ungated graders run concurrently; a gated one runs only when its gate component scored at least its
    threshold, else it scores 0 without running. Any grader's infra_error makes the whole an infra_error.
    A group-mode judge scores the answer as a group of one (`grade_group` of one submission: its details say
    `group_size: 1`), never pointwise: eval and `rlaif env check` grade single answers with the judge training uses.
    """
    return (await grade_group(env, task, [submission], ctx))[0]


async def grade_group(env: Environment, task: Task, submissions: list[Submission], ctx: GradeContext,
                      seed: int | str = 0) -> list[RewardResult]:
    """`grade` for every submission of one GRPO group, in order, with group-mode judges judging across the group.

    Every other grader runs per submission, gates included, as `grade` runs it. A group-mode judge component gets
    one `score_group` call (per sample) for the answers whose gate is open; the others score 0 ("gated") unseen.
    `seed` (the trainer passes the group id) seeds the shuffle of the answers' order. When a group verdict fails,
    every result of the group is infra_error, the why in that component's details: a group is never scored in
    part, nor pointwise instead.
    """
    graders: list[Grader] = [*env.graders(task), *configured_graders(ctx.components, task)]
    grouped = {g.name: g for g in graders if isinstance(g, RubricJudge) and g.group_mode(ctx)}
    results: list[dict[str, RewardResult]] = [{} for _ in submissions]
    failed: dict[str, RewardResult] = {}

    async def scores(g: Grader, shown: list[int]) -> list[RewardResult]:
        if g.name in grouped:
            return await grouped[g.name].grade_group(task, [submissions[i] for i in shown], ctx, seed)
        return list(await asyncio.gather(*(g.grade(task, submissions[i], ctx) for i in shown)))

    async def run(stage: list[tuple[Grader, list[int]]]) -> None:
        """Runs each grader on the submissions (by index) it is paired with, all concurrently."""
        for (g, shown), rs in zip(stage, await asyncio.gather(*(scores(g, shown) for g, shown in stage)), strict=True):
            for i, r in zip(shown, rs, strict=True):
                results[i][g.name] = r
            failure = next((r for r in rs if r.status == "infra_error"), None)
            if g.name in grouped and failure is not None:
                failed[g.name] = failure

    everyone = list(range(len(submissions)))
    await run([(g, everyone) for g in graders if g.gate is None])

    def passed(g: Grader, i: int) -> bool:
        return g.gate in results[i] and (results[i][g.gate].total or 0.0) >= g.gate_threshold

    gated = [(g, [i for i in everyone if passed(g, i)]) for g in graders if g.gate is not None]
    for g, open_ in gated:
        for i in set(everyone) - set(open_):
            results[i][g.name] = RewardResult(total=0.0, components={g.name: 0.0},
                                              details={"gated": f"{g.gate} below {g.gate_threshold}"})
    await run(gated)
    for name, failure in failed.items():
        why = (f"the group verdict of judge component {name!r} failed, so every answer of the group "
               f"({len(submissions)}) is infra_error: a group is never scored in part, nor pointwise instead")
        for per_submission in results:
            per_submission[name] = RewardResult(status="infra_error", details={**failure.details, "group": why})
    return [_combine(graders, r) for r in results]


def _combine(graders: list[Grader], results: Mapping[str, RewardResult]) -> RewardResult:
    """The reward of one submission from its graders' results (by name): their weighted mean, every component and
    its details kept; infra_error when any grader's is, else policy_error when any grader's is."""
    components = {g.name: results[g.name].total for g in graders}
    details: dict[str, Any] = {g.name: results[g.name].details for g in graders}
    if any(results[g.name].status == "infra_error" for g in graders):
        return RewardResult(status="infra_error", components=components, details=details)
    weight = sum(g.weight for g in graders) or 1.0
    total = sum(g.weight * (results[g.name].total or 0.0) for g in graders) / weight
    status = "policy_error" if any(results[g.name].status == "policy_error" for g in graders) else "ok"
    return RewardResult(status=status, total=total, components=components, details=details)
