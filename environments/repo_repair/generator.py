"""Deterministic generator of SWE-style "repo repair" tasks.

Each task is a small, correct Python package with one bug injected, a problem statement written like an issue,
hidden tests in SWE-bench vocabulary (FAIL_TO_PASS, PASS_TO_PASS) and the reference fix.

The repositories are package data in `repos/` beside this module (text files, UTF-8):

    repos/splits.json                 {"train": [...], "test": [...]}: every repository folder under exactly one
                                      split, listed in the order its tasks are drawn in
    repos/<package>/
        <package>/<stem>.py           the correct module, the package's only file (the generator writes the
                                      package's __init__.py and the repository's README.md)
        tests/test_hidden_<stem>.py   the hidden tests, at the path a task gives them: an import header, then test
                                      functions separated by two blank lines; the first three that a mutation
                                      does not break are also the repository's visible tests/test_<stem>.py
        mutations.json                the bugs the module can get: a list of entries (an entry's position is the
                                      index in its task ids), each with
            kind          the kind of bug, part of the task id `repo_repair/<package>-<kind>-<index>`
            original      whole lines of the correct module, each ending in a newline, occurring exactly once
            replacement   what those lines become in the buggy module ("" deletes them)
            breaks        the hidden test functions that fail on the buggy module: the task's FAIL_TO_PASS
            example       the key in `examples.EXAMPLES` of the call that shows the bug in the problem statement

What is not obvious:
- A bug is injected by replacing one exact snippet of whole lines in the correct source; the snippet must occur
  exactly once at the start of a line (no AST rewriting, so the buggy code keeps the author's formatting).
- FAIL_TO_PASS is declared per mutation (the hidden test functions it is known to break), not computed here:
  the generator never runs pytest. tests/test_repo_repair_generator.py proves every declaration by running the
  hidden tests against the buggy and the fixed repository.
- The problem statement's reproduction is computed, not written: the example call (with numbers drawn from the
  seed) is evaluated against the buggy and the correct source in-process with exec, so its shown output is real,
  and generation fails when an example does not expose the bug. The reproduction is a doctest; the expected output
  at the end of the statement is what the fixed code prints.
- Splits are by repository (`repos/splits.json`), so no module is shared, and each split contributes to `count`
  in proportion to its number of (module, mutation) pairs.
- A task id names its (module, mutation) pair and does not depend on the seed; the seed only picks the pairs,
  their order and the cosmetic details of the statement.
- Stdlib only, Python 3.10+: the package (this module, examples.py and repos/) must import inside sandboxes and
  without rlaif installed.
"""

from __future__ import annotations

import ast
import difflib
import json
import random
import re
import textwrap
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from .examples import EXAMPLES

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable


@dataclass(frozen=True)
class RepairTask:
    """One repair task: the buggy repository, the issue, the hidden tests and the reference fix."""

    id: str
    problem_statement: str
    repo: dict[str, str]
    tests: dict[str, str]
    fail_to_pass: tuple[str, ...]
    pass_to_pass: tuple[str, ...]
    reference_files: dict[str, str]
    reference_patch: str
    split: str


@dataclass(frozen=True)
class Mutation:
    """One injectable bug: `original` (whole lines of the correct source) becomes `replacement`."""

    kind: str
    original: str
    replacement: str
    breaks: tuple[str, ...]  # the hidden test functions that fail on the buggy code
    example: Callable[[random.Random], str]  # a call expression that shows the bug


@dataclass(frozen=True)
class BaseModule:
    """A correct package `package/` holding one module `stem`.py, its hidden tests and the bugs it can get."""

    package: str
    stem: str
    source: str
    tests: str  # import header, then test functions separated by two blank lines
    mutations: tuple[Mutation, ...]


REPOS = resources.files(__package__) / "repos"
HIDDEN_TESTS = "tests/test_hidden_{stem}.py"


def _mutation(entry: dict[str, Any], where: str) -> Mutation:
    """The Mutation of one mutations.json entry, its example looked up by name."""
    if entry.get("example") not in EXAMPLES:
        raise RuntimeError(f"{where}: {entry.get('example')!r} is not an example of examples.EXAMPLES")
    return Mutation(**{**entry, "breaks": tuple(entry["breaks"]), "example": EXAMPLES[entry["example"]]})


def _load_module(folder: Traversable) -> BaseModule:
    """The repository in `folder` (laid out as the module docstring says)."""
    package = folder.name
    sources = [file for file in (folder / package).iterdir() if file.name.endswith(".py")]
    if len(sources) != 1:
        raise RuntimeError(f"{folder / package} must hold exactly one module, not {len(sources)}")
    stem = sources[0].name.removesuffix(".py")
    entries = json.loads((folder / "mutations.json").read_text(encoding="utf-8"))
    return BaseModule(
        package=package,
        stem=stem,
        source=sources[0].read_text(encoding="utf-8"),
        tests=(folder / HIDDEN_TESTS.format(stem=stem)).read_text(encoding="utf-8"),
        mutations=tuple(_mutation(entry, f"{folder / 'mutations.json'}[{i}]") for i, entry in enumerate(entries)),
    )


def _load_modules() -> dict[str, tuple[BaseModule, ...]]:
    """The repositories of each split, in the order of `repos/splits.json`."""
    splits = json.loads((REPOS / "splits.json").read_text(encoding="utf-8"))
    listed = sorted(name for names in splits.values() for name in names)
    folders = sorted(folder.name for folder in REPOS.iterdir() if folder.is_dir() and folder.name[0] not in "._")
    if sorted(splits) != ["test", "train"] or listed != folders:
        raise RuntimeError(f"{REPOS / 'splits.json'} must list every repository folder once, under train or test")
    return {split: tuple(_load_module(REPOS / name) for name in splits[split]) for split in ("train", "test")}


MODULES = _load_modules()

TITLES = ("Wrong result from `{name}`", "`{name}` does not behave as documented", "Unexpected behaviour of `{name}`")
OPENINGS = (
    "I ran into this while using `{package}`:",
    "Minimal reproduction, run from the repository root:",
    "This looks like a bug in `{package}`. To reproduce:",
)
EXPECTATIONS = ("I expected this instead:", "It should have printed:", "The expected output is:")


def _replace_lines(source: str, original: str, replacement: str, task_id: str) -> str:
    """`source` with the whole lines `original` replaced; they must occur exactly once, at a line start."""
    if not original.endswith("\n") or ("\n" + source).count("\n" + original) != 1:
        raise RuntimeError(f"{task_id}: the mutation site must be whole lines occurring exactly once: {original!r}")
    return ("\n" + source).replace("\n" + original, "\n" + replacement, 1)[1:]


def _split_tests(tests: str) -> tuple[str, dict[str, str]]:
    """The import header and the test functions by name."""
    header, *functions = re.split(r"\n\n\n(?=def test_)", tests.rstrip("\n"))
    return header, {re.match(r"def (test_\w+)\(", function)[1]: function for function in functions}


def _outcome(source: str, module_name: str, call: str) -> str:
    """What a doctest of `call` against `source` prints: the value's repr, or the exception as a traceback."""
    namespace: dict[str, object] = {"__name__": module_name}
    exec(compile(source, module_name, "exec"), namespace)
    try:
        return repr(eval(call, namespace))
    except Exception as error:
        detail = traceback.format_exception_only(type(error), error)[-1].strip()
        return f"Traceback (most recent call last):\n  ...\n{detail}"


def _problem_statement(module: BaseModule, mutation: Mutation, buggy: str, rng: random.Random, task_id: str) -> str:
    call = mutation.example(rng)
    module_name = f"{module.package}.{module.stem}"
    actual, expected = _outcome(buggy, module_name, call), _outcome(module.source, module_name, call)
    if actual == expected:
        raise RuntimeError(f"{task_id}: the example {call} does not show the bug")
    name = re.match(r"\w+", call)[0]
    reproduction = f">>> from {module.package} import {name}\n>>> {call}\n{actual}"
    title, opening = rng.choice(TITLES).format(name=name), rng.choice(OPENINGS).format(package=module.package)
    return (
        f"{title}\n\n{opening}\n\n{textwrap.indent(reproduction, '    ')}\n\n"
        f"{rng.choice(EXPECTATIONS)}\n\n{textwrap.indent(expected, '    ')}\n"
    )


def _package_init(module: BaseModule) -> str:
    names = re.findall(r"^(?:def|class) ([A-Za-z]\w*)", module.source, re.MULTILINE)
    imported = "".join(f"    {name},\n" for name in names)
    exported = "".join(f'    "{name}",\n' for name in names)
    docstring = ast.get_docstring(ast.parse(module.source))
    return f'"""{docstring}"""\n\nfrom .{module.stem} import (\n{imported})\n\n__all__ = [\n{exported}]\n'


def _diff(before: dict[str, str], after: dict[str, str]) -> str:
    return "".join(
        line
        for path in sorted(after)
        for line in difflib.unified_diff(
            before[path].splitlines(keepends=True), after[path].splitlines(keepends=True), f"a/{path}", f"b/{path}"
        )
    )


def _build(module: BaseModule, index: int, split: str, seed: int) -> RepairTask:
    mutation = module.mutations[index]
    task_id = f"repo_repair/{module.package}-{mutation.kind}-{index:02d}"
    source_path = f"{module.package}/{module.stem}.py"
    buggy = _replace_lines(module.source, mutation.original, mutation.replacement, task_id)
    header, functions = _split_tests(module.tests)
    if not set(mutation.breaks) <= set(functions):
        raise RuntimeError(f"{task_id}: declares unknown tests {set(mutation.breaks) - set(functions)}")
    passing = [name for name in functions if name not in mutation.breaks]
    if not mutation.breaks or len(passing) < 2:
        raise RuntimeError(f"{task_id}: needs at least one failing and two passing hidden tests")
    hidden_path, visible_path = HIDDEN_TESTS.format(stem=module.stem), f"tests/test_{module.stem}.py"
    visible = "\n\n\n".join([header, *(functions[name] for name in passing[:3])]) + "\n"
    readme = (
        f"# {module.package}\n\n{ast.get_docstring(ast.parse(module.source))}\n\n"
        "Run the tests from the repository root with `python -m pytest`.\n"
    )
    repo = {
        "README.md": readme,
        f"{module.package}/__init__.py": _package_init(module),
        source_path: buggy,
        visible_path: visible,
    }
    fixed = {source_path: module.source}
    return RepairTask(
        id=task_id,
        problem_statement=_problem_statement(module, mutation, buggy, random.Random(f"{seed}/{task_id}"), task_id),
        repo=repo,
        tests={hidden_path: module.tests},
        fail_to_pass=tuple(f"{hidden_path}::{name}" for name in functions if name in mutation.breaks),
        pass_to_pass=tuple(f"{hidden_path}::{name}" for name in passing),
        reference_files=fixed,
        reference_patch=_diff(repo, fixed),
        split=split,
    )


def generate_tasks(seed: int = 0, count: int = 24) -> list[RepairTask]:
    """`count` distinct tasks chosen and ordered by `seed`, each split represented in proportion to its size.

    Raises ValueError when `count` exceeds the number of (module, mutation) pairs.
    """
    pairs = {
        split: [(module, index, split) for module in modules for index in range(len(module.mutations))]
        for split, modules in MODULES.items()
    }
    total = len(pairs["train"]) + len(pairs["test"])
    if not 0 <= count <= total:
        raise ValueError(f"count must be between 0 and {total}, got {count}")
    rng = random.Random(seed)
    n_test = round(count * len(pairs["test"]) / total)
    chosen = rng.sample(pairs["train"], count - n_test) + rng.sample(pairs["test"], n_test)
    rng.shuffle(chosen)
    return [_build(module, index, split, seed) for module, index, split in chosen]
