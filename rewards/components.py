"""Reward components an environment does not declare but config can add: a judge, a format check, a length
penalty. With the environment's own graders they form a task's reward (`grade`): the weighted mean of named
components, each kept on the trajectory. A component may be gated on another (`gate`): it runs only when that
component scored at least `gate_threshold`, and scores 0 otherwise (e.g. judge only code that passes its tests).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from rlaif.core.config import ComponentConfig
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


async def grade(env: Environment, task: Task, submission: Submission, ctx: GradeContext) -> RewardResult:
    """The weighted mean of the environment's graders and the components config adds (`ctx.components`).

    Ungated graders run concurrently; a gated one runs only when its gate component scored at least its
    threshold, else it scores 0 without running. Any grader's infra_error makes the whole an infra_error.
    """
    graders: list[Grader] = [*env.graders(task), *configured_graders(ctx.components, task)]
    results: dict[str, RewardResult] = {}

    async def run(group: list[Grader]) -> None:
        for g, r in zip(group, await asyncio.gather(*(g.grade(task, submission, ctx) for g in group)), strict=True):
            results[g.name] = r

    await run([g for g in graders if g.gate is None])
    gated = [g for g in graders if g.gate is not None]
    open_gates = [g for g in gated if (results.get(g.gate) and (results[g.gate].total or 0.0) >= g.gate_threshold)]
    for g in gated:
        if g not in open_gates:
            results[g.name] = RewardResult(total=0.0, components={g.name: 0.0},
                                           details={"gated": f"{g.gate} below {g.gate_threshold}"})
    await run(open_gates)
    components = {g.name: results[g.name].total for g in graders}
    details: dict[str, Any] = {g.name: results[g.name].details for g in graders}
    if any(results[g.name].status == "infra_error" for g in graders):
        return RewardResult(status="infra_error", components=components, details=details)
    weight = sum(g.weight for g in graders) or 1.0
    total = sum(g.weight * (results[g.name].total or 0.0) for g in graders) / weight
    status = "policy_error" if any(results[g.name].status == "policy_error" for g in graders) else "ok"
    return RewardResult(status=status, total=total, components=components, details=details)
