"""An example rlaif environment plugin: arithmetic questions, answered with a number, graded by exact match.

It shows the whole surface a plugin needs: an `Args` model for its config, `tasks` with disjoint
seeded splits, and a custom `Grader`. It needs no sandbox (no tools), so episodes run without one.
"""

from __future__ import annotations

import random
import re

from rlaif.env import EnvArgs, Environment, GradeContext, Grader, Submission
from rlaif.types import RewardResult, Task

__all__ = ["Arithmetic"]


class ExactNumber(Grader):
    """1 when the last number in the answer equals the task's reference, else 0."""

    name = "exact"

    async def grade(self, task: Task, submission: Submission, ctx: GradeContext) -> RewardResult:
        answer = next((m.content for m in reversed(submission.messages) if m.role == "assistant"), "")
        numbers = re.findall(r"-?\d+", answer)
        score = float(bool(numbers) and numbers[-1] == task.reference)
        return RewardResult(total=score, components={self.name: score}, details={"answer": numbers[-1:]})


class ArithmeticArgs(EnvArgs):
    seed: int = 0
    count: int = 40


class Arithmetic(Environment):
    name = "arith"
    system_prompt = "Answer with the number only."
    Args = ArithmeticArgs

    def tasks(self, split: str) -> list[Task]:
        rng = random.Random(self.args.seed)
        tasks = []
        for i in range(self.args.count):
            a, b, op = rng.randint(2, 99), rng.randint(2, 99), rng.choice("+-*")
            value = {"+": a + b, "-": a - b, "*": a * b}[op]
            tasks.append(Task(id=f"arith/{i}", env=self.name, split="test" if i % 5 == 0 else "train",
                              prompt=f"What is {a} {op} {b}?", reference=str(value)))
        return [t for t in tasks if t.split == split]

    def graders(self, task: Task) -> list[Grader]:
        return [ExactNumber()]
