"""Rubrics and the judge grader's task side.

A rubric is a checklist of weighted criteria, written in YAML or JSON:

    version: "1"
    criteria:
      - name: correct
        text: The explanation states what the function returns for any input.
        weight: 2
      - name: concise
        text: It is at most three sentences.

`RubricJudge` is the grader an environment declares for judged tasks. It scores empty or degenerate
answers 0 without a judge call; everything else goes to the judge named in config (`ctx.judges`).
A `group`-mode judge scores the answers of a whole GRPO group against each other (`grade_group`, which
`rlaif_rewards.components.grade_group` calls once the group has finished); given one answer, it scores it
as a group of one, never pointwise.
Without a configured judge it returns `infra_error` with a note (never a score): judges arrive with
the reward-service issue (#5), and `rlaif env check` skips such graders with that note.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from rlaif.env import GradeContext, Grader, Submission
from rlaif.errors import RlaifError
from rlaif.types import RewardResult, Task

NO_JUDGE = "no judge configured: judge graders are skipped until a judge is set (the reward-service issue, #5)"


class Criterion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    text: str
    """What a good answer does, as one checkable statement."""
    weight: float = Field(default=1.0, ge=0)


class Rubric(BaseModel):
    model_config = ConfigDict(extra="forbid")

    criteria: list[Criterion] = Field(min_length=1)
    version: str = "1"
    """Part of the verdict cache key: bump it when the criteria change."""

    @classmethod
    def from_file(cls, path: str | Path) -> Rubric:
        path = Path(path)
        try:
            return cls.model_validate(yaml.safe_load(path.read_text()))
        except (OSError, yaml.YAMLError, ValueError) as err:
            raise RlaifError(f"rubric {path} is invalid ({str(err).splitlines()[0]}); see rlaif_rewards.rubric "
                             "for the format") from None


def is_degenerate(answer: str, prompt: str = "") -> bool:
    """Empty, without a letter or digit, or the question repeated back: worth 0 without asking a judge."""
    text = answer.strip()
    return not re.search(r"[A-Za-z0-9]", text) or (bool(prompt) and text == prompt.strip())


class RubricJudge(Grader):
    """A judge scores the episode's work against a rubric (and a reference answer, when given): the last assistant
    answer, or what the environment says a judge sees (`Submission.for_judge`)."""

    name = "judge"

    def __init__(self, rubric: Rubric, reference: str | None = None, judge: str = "default", weight: float = 1.0):
        self.rubric, self.reference, self.judge, self.weight = rubric, reference, judge, weight

    def group_mode(self, ctx: GradeContext) -> bool:
        """Whether this grader's judge is configured and in `group` mode (it then grades whole groups)."""
        judge = ctx.judges.get(self.judge)
        return judge is not None and judge.config.mode == "group"

    async def grade(self, task: Task, submission: Submission, ctx: GradeContext) -> RewardResult:
        """One answer's score; with a group-mode judge, as a group of one (`grade_group`), never pointwise."""
        answer = submission.for_judge
        if is_degenerate(answer, task.prompt):
            return RewardResult(total=0.0, components={self.name: 0.0},
                                details={"short_circuit": "empty or degenerate answer: 0, no judge call"})
        judge = ctx.judges.get(self.judge)
        if judge is None:
            return RewardResult(status="infra_error", details={"note": NO_JUDGE})
        if self.group_mode(ctx):
            return (await self.grade_group(task, [submission], ctx))[0]
        return await judge.score(task, answer, self.rubric, self.reference)

    async def grade_group(self, task: Task, submissions: list[Submission], ctx: GradeContext,
                          seed: int | str = 0) -> list[RewardResult]:
        """The answers of `submissions` judged against each other (`Judge.score_group`: one call per sample, their
        order shuffled per call from `seed`), one result each, in order; details say `group_size`. Only for a
        group-mode judge (`group_mode`). A failed verdict is `infra_error` for every answer the judge was shown."""
        results = await ctx.judges[self.judge].score_group(task, [s.for_judge for s in submissions], self.rubric,
                                                           self.reference, seed=seed)
        return [r.model_copy(update={"details": {**r.details, "group_size": len(submissions)}}) for r in results]
