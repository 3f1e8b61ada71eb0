"""Unit-test grading that the graded code cannot tamper with.

The tests run only after the episode, in a FRESH sandbox from the task's image that holds the
submission's files and then the task's own test files (written last, so they win). Before that,
everything the agent may have planted to steer the test run is dropped:
- any `conftest.py`, `pytest.ini`, `tox.ini`, `setup.cfg`, `sitecustomize.py`, `usercustomize.py`, `*.pth`
  (and `pyproject.toml` unless the task shipped one: then the task's version is restored);
- any file at a test path of the task.
pytest then runs isolated (`python3 -I`, `--noconftest`, `-c /dev/null`, no plugins from the work tree,
the report written to a random path outside it), and the grade is read from the JUnit report alone:
- every expected test id must appear in the report and pass; a missing test counts as failed;
- a run that times out, is killed, or writes no report scores 0 (status `policy_error`);
- an exit code that contradicts the report (e.g. 0 with failures: `atexit` tricks) scores 0.
Infrastructure failures (the sandbox died) are retried on a fresh sandbox, then `infra_error`: no score.

Not covered: code that deliberately patches pytest from inside the test process. Graded code runs
in the same interpreter as its tests, as in every pytest-based harness; the sandbox bounds the damage.
"""

from __future__ import annotations

import fnmatch
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Literal

from rlaif.env import GradeContext, Grader, Submission
from rlaif.sandbox.base import SandboxError
from rlaif.types import RewardResult, Task

PLANTABLE = ("conftest.py", "pytest.ini", "tox.ini", "setup.cfg", "sitecustomize.py", "usercustomize.py", "*.pth",
             "pyproject.toml", "__pycache__/*", "*.pyc")


def staged_files(submitted: Mapping[str, bytes], original: Mapping[str, str | bytes],
                 tests: Mapping[str, str | bytes]) -> dict[str, bytes]:
    """The files a test run sees: the submission minus anything plantable, the task's originals of those
    files restored, and the task's tests on top."""
    def plantable(path: str) -> bool:
        name = path.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(path, p) for p in PLANTABLE) or path in tests

    files = {p: c for p, c in submitted.items() if not plantable(p)}
    files.update({p: _bytes(c) for p, c in original.items() if plantable(p) and p not in tests})
    files.update({p: _bytes(c) for p, c in tests.items()})
    return files


def parse_junit(xml: bytes) -> dict[str, str]:
    """Test id as pytest prints it (`tests/test_x.py::test_a`, `tests/test_x.py::TestA::test_a`) ->
    passed | failed | error | skipped. Needs the xunit1 family, whose test cases carry their file."""
    outcomes = {}
    for case in ET.fromstring(xml).iter("testcase"):
        path, classname = case.get("file", ""), case.get("classname", "")
        module = path.removesuffix(".py").replace("/", ".")
        inner = classname[len(module) + 1:] if classname.startswith(module + ".") else ""
        test_id = "::".join(part for part in (path, inner.replace(".", "::"), case.get("name", "")) if part)
        kinds = {child.tag for child in case}
        outcomes[test_id] = next((k for k in ("failure", "error", "skipped") if k in kinds), "passed")
    return {t: {"failure": "failed"}.get(o, o) for t, o in outcomes.items()}


class UnitTests(Grader):
    """Runs the task's tests against the submission; reward = fraction passed, or all-or-nothing."""

    name = "tests"

    def __init__(
        self,
        image: str,
        tests: Mapping[str, str | bytes],
        expected: Sequence[str],
        *,
        original: Mapping[str, str | bytes] | None = None,
        mode: Literal["fraction", "all"] = "fraction",
        timeout_s: float = 60.0,
        weight: float = 1.0,
        retries: int = 2,
    ) -> None:
        self.image, self.tests, self.expected = image, dict(tests), list(expected)
        self.original, self.mode, self.timeout_s = dict(original or {}), mode, timeout_s
        self.weight, self.retries = weight, retries

    async def grade(self, task: Task, submission: Submission, ctx: GradeContext) -> RewardResult:
        files = staged_files(submission.files, self.original, self.tests)
        report = f"/tmp/rlaif-report-{secrets.token_hex(8)}.xml"
        test_files = sorted({test_id.split("::")[0] for test_id in self.expected})
        cmd = ["python3", "-I", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--noconftest", "-c", "/dev/null",
               "--rootdir=/work", "-o", "pythonpath=/work", "-o", "addopts=", "-o", "junit_family=xunit1",
               f"--junitxml={report}", *test_files]
        pool = ctx.pools.get(self.image)
        error = "not run"
        for _ in range(self.retries + 1):
            try:
                async with pool.sandbox() as sandbox:
                    await sandbox.write_files(files)
                    run = await sandbox.exec(cmd, timeout=self.timeout_s)
                    if run.status == "infra_error":
                        error = run.error or "sandbox failed"
                        continue
                    xml = None
                    if run.status in ("ok", "nonzero_exit"):
                        try:
                            xml = await sandbox.read_file(report)
                        except SandboxError:
                            xml = None  # no report: the run never got that far (or the sandbox broke; see alive)
                        if xml is None and not await sandbox.alive():
                            error = f"sandbox died while reading the report of {task.id}"
                            continue
                    return self._score(run.status, run.exit_code, xml, run.stdout[-2000:] + run.stderr[-2000:])
            except SandboxError as err:
                error = str(err)
        return RewardResult(status="infra_error", details={"error": error})

    def _score(self, status: str, exit_code: int | None, xml: bytes | None, log: str) -> RewardResult:
        details: dict = {"run_status": status, "exit_code": exit_code, "log": log}
        if xml is None:
            details["tests"] = {t: "not run" for t in self.expected}
            return RewardResult(status="policy_error", total=0.0, components={self.name: 0.0}, details=details)
        try:
            outcomes = parse_junit(xml)
        except ET.ParseError:
            outcomes = {}
        tests = {t: outcomes.get(t, "missing") for t in self.expected}
        passed = sum(v == "passed" for v in tests.values())
        # pytest exits 0 exactly when nothing failed, 1 when something did; anything else, or a report that
        # disagrees with the exit code (an atexit hook forcing 0, say), earns nothing.
        any_failed = any(v in ("failed", "error") for v in outcomes.values())
        consistent = exit_code in (0, 1) and (exit_code == 1) == any_failed
        details.update(tests=tests, consistent=consistent)
        if not consistent:
            score = 0.0
        elif self.mode == "all":
            score = float(passed == len(tests))
        else:
            score = passed / len(tests) if tests else 0.0
        return RewardResult(status="ok", total=score, components={self.name: score}, details=details)


def _bytes(content: str | bytes) -> bytes:
    return content.encode() if isinstance(content, str) else content
