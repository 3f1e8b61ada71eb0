"""The repo_repair task data, proven by running it.

For every task of `generate_tasks(0, 30)`, pytest runs twice in a scratch copy (buggy repository plus hidden tests,
then the same with the reference files applied). The buggy run must fail exactly the declared FAIL_TO_PASS tests,
so the visible tests and every PASS_TO_PASS test pass on the buggy code; the fixed run must pass everything.
Both runs also collect the issue's reproduction as a doctest (`issue.txt`): with the output the statement shows
on the buggy code, and with the statement's expected output on the fixed code.
Each run needs its own interpreter (every task imports a package of the same name), so the runs go in parallel.
"""

from __future__ import annotations

import doctest
import os
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rlaif_environments.repo_repair.generator import RepairTask, generate_tasks

pytestmark = pytest.mark.unit
TASKS = generate_tasks(0, 30)
ISSUE = "issue.txt"  # junit reports a doctest file with classname and name both set to its path
HUNK = re.compile(r"@@ -(\d+)(?:,(\d+))? \+\d+(?:,(\d+))? @@")


def _package(task: RepairTask) -> str:
    (package,) = {path.split("/")[0] for path in task.repo if "/" in path and not path.startswith("tests/")}
    return package


def _issue_doctest(task: RepairTask, fixed: bool) -> str:
    """The statement's reproduction as a doctest file; `fixed` puts the statement's expected output last."""
    examples = doctest.DocTestParser().get_examples(task.problem_statement)
    expected = textwrap.dedent(task.problem_statement.rsplit("\n\n", 1)[1])
    wants = [example.want for example in examples[:-1]] + [expected if fixed else examples[-1].want]
    return "".join(f">>> {example.source}{want}" for example, want in zip(examples, wants, strict=True))


def _pytest(root: Path) -> dict[str, str]:
    """Runs pytest in `root` and gives every reported node id with its outcome: passed, failed or skipped."""
    report = root.parent / f"{root.name}.xml"
    env = {**os.environ, "PYTHONPATH": str(root), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--rootdir={root}"]
    command += [f"--doctest-glob={ISSUE}", f"--junitxml={report}"]
    subprocess.run(command, cwd=root, env=env, capture_output=True, timeout=120, check=False)
    outcomes = {}
    for case in ET.parse(report).iter("testcase"):
        module, name = case.get("classname", ""), case.get("name", "")
        node = name if module in ("", name) else f"{module.replace('.', '/')}.py::{name}"
        failed = case.find("failure") is not None or case.find("error") is not None
        outcomes[node] = "failed" if failed else "skipped" if case.find("skipped") is not None else "passed"
    return outcomes


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], dict[str, str]]:
    """Outcomes by (task id, "buggy" or "fixed")."""
    root = tmp_path_factory.mktemp("repo_repair")
    jobs = {}
    for number, task in enumerate(TASKS):
        buggy = {**task.repo, **task.tests, ISSUE: _issue_doctest(task, fixed=False)}
        fixed = {**buggy, **task.reference_files, ISSUE: _issue_doctest(task, fixed=True)}
        for variant, files in (("buggy", buggy), ("fixed", fixed)):
            directory = root / f"{number:02d}-{variant}"
            for path, content in files.items():
                (directory / path).parent.mkdir(parents=True, exist_ok=True)
                (directory / path).write_text(content)
            jobs[task.id, variant] = directory
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return dict(zip(jobs, pool.map(_pytest, jobs.values()), strict=True))


def _apply_patch(files: dict[str, str], patch: str) -> dict[str, str]:
    """Applies a unified diff of changed files (the only kind the generator writes), checking every removed and
    context line against the original."""
    result = dict(files)
    lines = patch.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        assert lines[i].startswith("--- a/"), lines[i]
        path = lines[i][len("--- a/") :].rstrip("\n")
        assert lines[i + 1] == f"+++ b/{path}\n", lines[i + 1]
        i += 2
        old, new, cursor = result[path].splitlines(keepends=True), [], 0
        while i < len(lines) and lines[i].startswith("@@"):
            start, old_count, new_count = HUNK.match(lines[i]).groups(default="1")
            old_left, new_left = int(old_count), int(new_count)
            begin = int(start) - 1 if old_left else int(start)
            new += old[cursor:begin]
            cursor = begin
            i += 1
            while old_left or new_left:
                tag, text = lines[i][0], lines[i][1:]
                if tag in " -":
                    assert old[cursor] == text, (path, cursor, text)
                    cursor, old_left = cursor + 1, old_left - 1
                if tag in " +":
                    new.append(text)
                    new_left -= 1
                i += 1
        result[path] = "".join(new + old[cursor:])
    return result


def test_same_seed_gives_the_same_tasks_with_unique_ids():
    assert generate_tasks(0) == generate_tasks(0)
    assert generate_tasks(11, 30) == generate_tasks(11, 30)
    for tasks in (generate_tasks(0), TASKS):
        assert len({task.id for task in tasks}) == len(tasks)


def test_seed_changes_the_tasks():
    assert generate_tasks(1) != generate_tasks(0)


def test_an_id_names_the_same_repository_under_every_seed():
    seen: dict[str, tuple] = {}
    for seed in range(4):
        for task in generate_tasks(seed, 30):
            content = (task.repo, task.tests, task.fail_to_pass, task.pass_to_pass, task.reference_files, task.split)
            assert seen.setdefault(task.id, content) == content, task.id
            assert re.fullmatch(rf"repo_repair/{_package(task)}-[a-z_]+-\d\d", task.id)


def test_count():
    assert len(generate_tasks(0, 30)) == 30
    assert generate_tasks(0, 0) == []
    for count in (-1, 10_000):
        with pytest.raises(ValueError):
            generate_tasks(0, count)


def test_every_example_of_many_seeds_shows_its_bug():
    """Generation evaluates each statement's example on buggy and fixed code and refuses one that shows no bug."""
    for seed in range(25):
        assert len(generate_tasks(seed, 30)) == 30


@pytest.mark.parametrize("count", [24, 30])
def test_splits_share_no_module_and_both_have_tasks(count: int):
    tasks = generate_tasks(0, count)
    modules = {split: {_package(task) for task in tasks if task.split == split} for split in ("train", "test")}
    assert modules["train"] and modules["test"]
    assert not modules["train"] & modules["test"]
    assert sum(task.split == "test" for task in tasks) >= 4


@pytest.mark.parametrize("task", TASKS, ids=lambda task: task.id)
def test_task_shape(task: RepairTask):
    assert task.split in ("train", "test")
    assert len(task.fail_to_pass) >= 1 and len(task.pass_to_pass) >= 2
    assert not set(task.fail_to_pass) & set(task.pass_to_pass)
    assert all(path.startswith("tests/") for path in task.tests)
    assert not set(task.tests) & set(task.repo)
    for node in task.fail_to_pass + task.pass_to_pass:
        path, _, name = node.partition("::")
        assert path in task.tests and re.search(rf"^def {name}\(", task.tests[path], re.MULTILINE), node
    assert set(task.reference_files) <= set(task.repo)
    assert all(task.repo[path] != content for path, content in task.reference_files.items())


@pytest.mark.parametrize("task", TASKS, ids=lambda task: task.id)
def test_buggy_repo_fails_exactly_the_declared_tests(task: RepairTask, runs):
    outcomes = runs[task.id, "buggy"]
    hidden = {node for node in outcomes if node.split("::")[0] in task.tests}
    assert hidden == {*task.fail_to_pass, *task.pass_to_pass}
    assert {node for node, outcome in outcomes.items() if outcome != "passed"} == set(task.fail_to_pass)


@pytest.mark.parametrize("task", TASKS, ids=lambda task: task.id)
def test_reference_files_pass_every_test(task: RepairTask, runs):
    outcomes = runs[task.id, "fixed"]
    assert {*task.fail_to_pass, *task.pass_to_pass} <= set(outcomes)
    assert {node for node, outcome in outcomes.items() if outcome != "passed"} == set()


@pytest.mark.parametrize("task", TASKS, ids=lambda task: task.id)
def test_visible_tests_pass_on_the_buggy_code(task: RepairTask, runs):
    outcomes = runs[task.id, "buggy"]
    visible = {node: outcome for node, outcome in outcomes.items() if node.split("::")[0] in task.repo}
    assert visible and set(visible.values()) == {"passed"}
    assert {node.split("::")[1] for node in visible} <= {node.split("::")[1] for node in task.pass_to_pass}


@pytest.mark.parametrize("task", TASKS, ids=lambda task: task.id)
def test_issue_reproduction_holds_on_buggy_code_and_expectation_on_fixed_code(task: RepairTask, runs):
    assert _issue_doctest(task, fixed=False) != _issue_doctest(task, fixed=True)
    assert runs[task.id, "buggy"][ISSUE] == "passed"
    assert runs[task.id, "fixed"][ISSUE] == "passed"


@pytest.mark.parametrize("task", TASKS, ids=lambda task: task.id)
def test_reference_patch_turns_the_repo_into_the_reference_files(task: RepairTask):
    assert _apply_patch(task.repo, task.reference_patch) == {**task.repo, **task.reference_files}


@pytest.mark.parametrize("task", TASKS, ids=lambda task: task.id)
def test_problem_statement_shows_neither_the_bug_nor_the_fix(task: RepairTask):
    changed = [
        line[1:].strip()
        for line in task.reference_patch.splitlines()
        if line.startswith(("-", "+")) and not line.startswith(("---", "+++"))
    ]
    assert changed
    for line in filter(None, changed):
        assert line not in task.problem_statement
    for path in task.reference_files:
        assert path not in task.problem_statement and Path(path).name not in task.problem_statement
