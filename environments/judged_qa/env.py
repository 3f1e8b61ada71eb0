"""judged_qa: open-ended coding questions graded by a judge against a rubric and a reference answer.

Three kinds of task, generated from a seed over small functions: explain what a function does, write
its docstring, and review a diff that changes its behaviour. Each carries a rubric (weighted criteria)
and a reference answer; the grader is `RubricJudge`, which needs a judge in config (issue #5) and
scores empty or degenerate answers 0 on its own.

The rubrics (by kind of task) and the edits that break a function for review tasks are data, in `data.yaml`
beside this module. A review's change is the first edit that changes what the function returns on one of its
test inputs, and its reference names that input; `reference_problem` re-runs both versions so `rlaif env check`
proves every reference's claim (in-process: the code is our own templates and edits, never model output).
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


def _outcome(code: str, name: str, args: list) -> str:
    """What calling `name`, defined by `code`, on `args` does, as a phrase: "returns 2" or "raises TypeError"."""
    namespace: dict = {}
    exec(code, namespace)  # trusted: our own templates and edits, never model output
    try:
        return f"returns {namespace[name](*args)!r}"
    except Exception as e:
        return f"raises {type(e).__name__}"


def _break(fn: dict) -> tuple[str, list] | None:
    """The first edit that changes `fn` on one of its inputs, as (broken code, that input); None when none does."""
    code, name = fn["reference"], fn["name"]
    head, line = code.splitlines(True)
    for old, new in BREAKS:
        if old in line:
            broken = head + line.replace(old, new, 1)
            for args, _ in fn["cases"]:
                if _outcome(broken, name, list(args)) != _outcome(code, name, list(args)):
                    return broken, list(args)
    return None


def _diff(code: str, broken: str) -> str:
    return "".join(difflib.unified_diff(code.splitlines(True), broken.splitlines(True), "a/f.py", "b/f.py"))


def _call(name: str, args: list) -> str:
    return f"{name}({', '.join(map(repr, args))})"


def _claim(name: str, args: list, before: str, after: str) -> str:
    """The clause of a review's reference that says how the change alters the function's output."""
    return f"`{_call(name, args)}` {before} before the change and {after} after it"


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
        tasks = [self._task(fn, ("explain", "docstring", "review")[i % 3]) for i, fn in enumerate(functions)]
        self._tasks = [t for t in tasks if t is not None]

    def tasks(self, split: str) -> list[Task]:
        return [t for t in self._tasks if t.split == split]

    def _task(self, fn: dict, kind: str) -> Task | None:
        """The `kind` task on `fn`; None for a review when no edit in data.yaml changes `fn` on its inputs."""
        code, behaviour = fn["reference"], fn["doc"].removesuffix(".")
        data = {"kind": kind, "rubric": RUBRICS[kind].model_dump(), "name": fn["name"], "code": code,
                "cases": [[list(args), expected] for args, expected in fn["cases"]]}
        if kind == "explain":
            prompt = f"Explain what this function does:\n\n```python\n{code}```"
            reference = f"`{fn['signature']}` takes one argument and {behaviour}."
        elif kind == "docstring":
            prompt = f"Write a one-line docstring for this function:\n\n```python\n{code}```"
            reference = f'"""Return {behaviour.removeprefix("returns ")}."""'
        else:
            found = _break(fn)
            if found is None:
                return None
            broken, args = found
            prompt = f"Review this change to `{fn['name']}`, which {behaviour}:\n\n```diff\n{_diff(code, broken)}```"
            claim = _claim(fn["name"], args, _outcome(code, fn["name"], args), _outcome(broken, fn["name"], args))
            reference = (f"The change alters the return line, so `{fn['name']}` no longer {behaviour}: {claim}. "
                         "That contradicts its purpose. "
                         f"Keep `{code.splitlines()[1].strip()}`.")
            data |= {"broken": broken, "witness": args}
        task_id = f"judged_qa/{kind}/{fn['name']}"
        split = seeded_split(task_id, self.args.test_fraction, self.args.seed)
        return Task(id=task_id, env=self.name, split=split, prompt=prompt, reference=reference, data=data)

    def reference_problem(self, task: Task) -> str | None:
        """Why `task`'s reference is false, or None when it holds; `rlaif env check` reports it as a failure.

        Every kind: the prompt shows the recorded function (a review: the recorded change), which returns its
        cases' outputs. A review, also: the change alters only the return line and changes the output on the
        input the reference names, as the reference says; and the line it says to keep is the original one.
        """
        data, name = task.data, task.data["name"]
        code = data["code"]
        shown = _diff(code, data["broken"]) if data["kind"] == "review" else code
        if shown not in task.prompt:
            return "the prompt does not show the function (for a review, the change) that the task records"
        wrong = [args for args, expected in data["cases"] if _outcome(code, name, args) != f"returns {expected!r}"]
        if wrong:
            return f"the function shown does not return its cases' outputs on {wrong}"
        if data["kind"] != "review":
            return None
        broken, args = data["broken"], data["witness"]
        if code.splitlines()[0] != broken.splitlines()[0] or len(broken.splitlines()) != 2:
            return "the change is not to the return line alone"
        before, after = _outcome(code, name, args), _outcome(broken, name, args)
        if before == after:
            return f"labelled a behaviour change, but `{_call(name, args)}` {before} both before and after it"
        if _claim(name, args, before, after) not in task.reference:
            return f"the reference does not say that {_claim(name, args, before, after)}"
        if f"Keep `{code.splitlines()[1].strip()}`" not in task.reference:
            return "the reference does not propose the original return line"
        return None

    def graders(self, task: Task) -> list[Grader]:
        return [RubricJudge(Rubric.model_validate(task.data["rubric"]), task.reference, judge=self.args.judge)]
