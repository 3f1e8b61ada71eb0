"""judged_qa: open-ended coding questions graded by a judge against a rubric and a reference answer.

Three kinds of task, generated from a seed over small functions: explain what a function does, write
its docstring, and review a diff that changes its behaviour. Each carries a rubric (weighted criteria)
and a reference answer; the grader is `RubricJudge`, which needs a judge in config (issue #5) and
scores empty or degenerate answers 0 on its own.
"""

from __future__ import annotations

import difflib
import hashlib

from rlaif.env import EnvArgs, Environment, Grader
from rlaif.types import Task
from rlaif_environments.pyfunc.generated import generate_functions
from rlaif_rewards.rubric import Criterion, Rubric, RubricJudge

RUBRICS = {
    "explain": Rubric(criteria=[
        Criterion(name="correct", text="States exactly what the function returns, for any valid input.", weight=2),
        Criterion(name="inputs", text="Says what kind of argument the function takes."),
        Criterion(name="concise", text="Uses at most three sentences and no code."),
    ]),
    "docstring": Rubric(criteria=[
        Criterion(name="accurate", text="The docstring describes the return value correctly.", weight=2),
        Criterion(name="form", text="It is one line, in the imperative mood (e.g. 'Return ...')."),
    ]),
    "review": Rubric(criteria=[
        Criterion(name="finds_change", text="Identifies which behaviour the diff changes.", weight=2),
        Criterion(name="judges_it", text="Says that the new behaviour contradicts the function's name and purpose."),
        Criterion(name="fix", text="Proposes the correct line."),
    ]),
}
BREAKS = [("+", "-"), ("-", "+"), ("*", "+"), ("%", "//"), ("==", "!="), (">", ">="), ("[:", "[1:")]


class JudgedQAArgs(EnvArgs):
    seed: int = 0
    count: int = 30
    test_fraction: float = 0.2
    judge: str = "default"
    """The judge (by name in the reward config) that grades answers."""


class JudgedQA(Environment):
    name = "judged_qa"
    system_prompt = "You answer questions about Python code precisely and briefly."
    Args = JudgedQAArgs

    def __init__(self, **args) -> None:
        super().__init__(**args)
        functions = generate_functions(self.args.count, self.args.seed + 1000)
        self._tasks = [self._task(fn, ("explain", "docstring", "review")[i % 3]) for i, fn in enumerate(functions)]

    def tasks(self, split: str) -> list[Task]:
        return [t for t in self._tasks if t.split == split]

    def _task(self, fn: dict, kind: str) -> Task:
        code, behaviour = fn["reference"], fn["doc"].removesuffix(".")
        if kind == "explain":
            prompt = f"Explain what this function does:\n\n```python\n{code}```"
            reference = f"`{fn['signature']}` takes one argument and {behaviour}."
        elif kind == "docstring":
            prompt = f"Write a one-line docstring for this function:\n\n```python\n{code}```"
            reference = f'"""Return {behaviour.removeprefix("returns ")}."""'
        else:
            broken = next((code.replace(a, b, 1) for a, b in BREAKS if a in code.splitlines()[1]), code + "# no-op\n")
            diff = "".join(difflib.unified_diff(code.splitlines(True), broken.splitlines(True), "a/f.py", "b/f.py"))
            prompt = f"Review this change to `{fn['name']}`, which {behaviour}:\n\n```diff\n{diff}```"
            original = code.splitlines()[1].strip()
            reference = (f"The change alters the return line, so `{fn['name']}` no longer "
                         f"{behaviour.removeprefix('returns ')}; that contradicts its purpose. Keep `{original}`.")
        task_id = f"judged_qa/{kind}/{fn['name']}"
        digest = hashlib.sha256(f"{self.args.seed}:{task_id}".encode()).digest()
        split = "test" if int.from_bytes(digest[:8], "big") / 2**64 < self.args.test_fraction else "train"
        return Task(id=task_id, env=self.name, split=split, prompt=prompt, reference=reference,
                    data={"kind": kind, "rubric": RUBRICS[kind].model_dump()})

    def graders(self, task: Task) -> list[Grader]:
        return [RubricJudge(Rubric.model_validate(task.data["rubric"]), task.reference, judge=self.args.judge)]
