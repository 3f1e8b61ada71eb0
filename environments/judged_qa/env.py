"""judged_qa: open-ended coding questions graded by a judge against a rubric and a reference answer.

Three kinds of task, generated from a seed over small functions: explain what a function does, write
its docstring, and review a diff that changes its behaviour. Each carries a rubric (weighted criteria)
and a reference answer; the grader is `RubricJudge`, which needs a judge in config (issue #5) and
scores empty or degenerate answers 0 on its own.

The rubrics (by kind of task) and the edits that break a function for review tasks are data, in `data.yaml`
beside this module.
"""

from __future__ import annotations

import difflib
from importlib import resources

import yaml

from rlaif.env import EnvArgs, Environment, Grader, seeded_split
from rlaif.types import Task
from rlaif_environments.pyfunc.generated import generate_functions
from rlaif_rewards.rubric import Rubric, RubricJudge

DATA = yaml.safe_load((resources.files(__package__) / "data.yaml").read_text(encoding="utf-8"))
RUBRICS = {kind: Rubric.model_validate(rubric) for kind, rubric in DATA["rubrics"].items()}
BREAKS = [tuple(pair) for pair in DATA["breaks"]]


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
        split = seeded_split(task_id, self.args.test_fraction, self.args.seed)
        return Task(id=task_id, env=self.name, split=split, prompt=prompt, reference=reference,
                    data={"kind": kind, "rubric": RUBRICS[kind].model_dump()})

    def graders(self, task: Task) -> list[Grader]:
        return [RubricJudge(Rubric.model_validate(task.data["rubric"]), task.reference, judge=self.args.judge)]
