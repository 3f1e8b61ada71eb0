"""Reward components an environment does not declare but config can add: a judge, a format check, a length
penalty. With the environment's own graders they form a task's reward: a weighted sum of named components,
each kept on the trajectory. A component may be gated on another (`gate`): it runs only when that component
scored at least `gate_threshold`, and scores 0 otherwise (e.g. judge only code that passes its tests).
"""

from __future__ import annotations

import re

from rlaif.config import ComponentConfig
from rlaif.env import GradeContext, Grader, Submission
from rlaif.errors import RlaifError
from rlaif.types import RewardResult, Task
from rlaif_rewards.rubric import Rubric, RubricJudge


def _answer(submission: Submission) -> str:
    return next((m.content for m in reversed(submission.messages) if m.role == "assistant"), "")


class FormatCheck(Grader):
    """1 when the final answer matches a regular expression (e.g. a fenced code block), else 0."""

    def __init__(self, pattern: str, name: str = "format", weight: float = 1.0) -> None:
        self.pattern, self.name, self.weight = re.compile(pattern, re.S), name, weight

    async def grade(self, task: Task, submission: Submission, ctx: GradeContext) -> RewardResult:
        score = float(bool(self.pattern.search(_answer(submission))))
        return RewardResult(total=score, components={self.name: score})


class LengthPenalty(Grader):
    """1 up to `max_chars` characters of final answer, falling linearly to 0 at twice that."""

    def __init__(self, max_chars: int, name: str = "length", weight: float = 1.0) -> None:
        self.max_chars, self.name, self.weight = max_chars, name, weight

    async def grade(self, task: Task, submission: Submission, ctx: GradeContext) -> RewardResult:
        over = max(0, len(_answer(submission)) - self.max_chars)
        score = max(0.0, 1.0 - over / self.max_chars)
        return RewardResult(total=score, components={self.name: score}, details={"chars": len(_answer(submission))})


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
