"""judged_qa's references are true: every review's change alters an output of the function on its own inputs,
and the env's own claim check (what `rlaif env check` runs) passes them and names a false one."""

from __future__ import annotations

import difflib
import re

import pytest

from rlaif.types import Task
from rlaif_environments.judged_qa.env import JudgedQA
from rlaif_environments.pyfunc.generated import generate_functions

pytestmark = pytest.mark.unit
SEEDS = range(3)
ALL_FUNCTIONS = 200
"""More than the generator's families hold, so each seed makes a task of every function."""


def every_task(seed: int) -> list[Task]:
    env = JudgedQA(seed=seed, count=ALL_FUNCTIONS)
    return env.tasks("train") + env.tasks("test")


def outcome(code: str, name: str, args: list) -> str:
    namespace: dict = {}
    exec(code, namespace)
    try:
        return repr(namespace[name](*args))
    except Exception as e:
        return type(e).__name__


def review_sides(task: Task) -> tuple[str, str]:
    """The function before and after the change, read back from the diff in the prompt."""
    diff = task.prompt.split("```diff\n", 1)[1].removesuffix("```").splitlines()[3:]
    before = "".join(line[1:] + "\n" for line in diff if not line.startswith("+"))
    after = "".join(line[1:] + "\n" for line in diff if not line.startswith("-"))
    return before, after


@pytest.mark.parametrize("seed", SEEDS)
def test_every_review_change_alters_an_output_on_the_functions_inputs(seed):
    functions = generate_functions(ALL_FUNCTIONS, seed + 1000)
    cases = {fn["name"]: fn["cases"] for fn in functions}
    reviews = [t for t in every_task(seed) if t.data["kind"] == "review"]
    assert len(reviews) == len(functions[2::3]), "a function got no review although an edit could break it"
    unchanged = []
    for task in reviews:
        name = task.id.rsplit("/", 1)[1]
        before, after = review_sides(task)
        assert "# no-op" not in after
        if all(outcome(before, name, list(args)) == outcome(after, name, list(args)) for args, _ in cases[name]):
            unchanged.append(name)
    assert unchanged == []


@pytest.mark.parametrize("seed", SEEDS)
def test_every_reference_claim_holds(seed):
    env = JudgedQA(seed=seed, count=ALL_FUNCTIONS)
    assert [(t.id, env.reference_problem(t)) for t in every_task(seed) if env.reference_problem(t)] == []


def test_a_change_labelled_as_breaking_that_changes_nothing_is_named():
    env = JudgedQA()
    task = next(t for t in env.tasks("train") + env.tasks("test") if t.data["kind"] == "review")
    code = task.data["code"]
    head, line = code.splitlines(True)
    same = head + line.replace("return ", "return (", 1).rstrip() + ")\n"
    diff = "".join(difflib.unified_diff(code.splitlines(True), same.splitlines(True), "a/f.py", "b/f.py"))
    tampered = task.model_copy(update={"prompt": task.prompt.split("```diff\n")[0] + f"```diff\n{diff}```",
                                       "data": task.data | {"broken": same}})
    problem = env.reference_problem(tampered)
    assert problem is not None and problem.startswith("labelled a behaviour change, but")


def test_a_reference_that_swaps_the_outputs_before_and_after_the_change_is_named():
    env = JudgedQA()
    task = next(t for t in env.tasks("train") + env.tasks("test") if t.data["kind"] == "review")
    swapped = re.sub(r"` (.+?) before the change and (.+?) after it", r"` \2 before the change and \1 after it",
                     task.reference)
    assert swapped != task.reference
    problem = env.reference_problem(task.model_copy(update={"reference": swapped}))
    assert problem is not None and problem.startswith("the reference does not say that")
