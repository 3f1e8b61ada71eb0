"""A task a randomly initialised model can learn in a few dozen GRPO steps: answer with digits.

The reward is the share of the answer's characters that are digits. The tiny model's first answers are
about a third digits, and every group has spread, so the learning signal is dense; a run whose mean reward
climbs toward 1 has generation, rewards, advantages, the loss, the optimizer and weight sync all working.
"""

from __future__ import annotations

from rlaif.env import EnvArgs, Environment, GradeContext, Grader, Submission
from rlaif.types import RewardResult, Task


class DigitShare(Grader):
    name = "digits"

    async def grade(self, task: Task, submission: Submission, ctx: GradeContext) -> RewardResult:
        answer = next((m.content for m in reversed(submission.messages) if m.role == "assistant"), "") or ""
        share = sum(c.isdigit() for c in answer) / len(answer) if answer else 0.0
        return RewardResult(total=share, components={self.name: share})


class DigitsArgs(EnvArgs):
    count: int = 16


class Digits(Environment):
    name = "digits"
    Args = DigitsArgs

    def tasks(self, split: str) -> list[Task]:
        words = ["a number", "digits", "a code", "a count", "an amount", "a figure", "a total", "a value"]
        return [Task(id=f"digits/{i}", env=self.name, split=split, prompt=f"Write {words[i % len(words)]}, #{i}.")
                for i in range(self.args.count)]

    def graders(self, task: Task) -> list[Grader]:
        return [DigitShare()]
