"""Pytest grading for suites that must import the submission (repo_repair), made as hard to forge as a shared
interpreter allows, and honest about the rest.

The tests run only after the episode, in a FRESH sandbox from the task's image that holds the submission's
files and then the task's own test files (written last, so they win). Before that, everything the agent may
have planted to steer the test run is dropped:
- any `conftest.py`, `pytest.ini`, `tox.ini`, `setup.cfg`, `sitecustomize.py`, `usercustomize.py`, `*.pth`
  (and `pyproject.toml` unless the task shipped one: then the task's version is restored);
- any file at a test path of the task.
pytest then runs isolated (`python3 -I`, `--noconftest`, `-c /dev/null`, no plugins from the work tree), with a
plugin of rlaif's registered before anything of the submission is imported. It streams every test's start and
outcome, as they happen, to a pipe the sandbox executor reads: no report file exists for anything to rewrite,
and the executor stops reading when the pytest process exits, so a process left behind adds nothing. The grade
is read from that stream, in order, and a test passes only when it started, its call passed, nothing else
failed it, and the stream never contradicted itself about it:
- an outcome for a test that is not the one running, a second outcome, a test started twice, a record after
  the end, or a line that is not a record fails that test (or all of them) and raises a flag;
- every expected test must appear and pass; a missing test counts as failed;
- a run that times out, is killed, or streams nothing scores 0 (status `policy_error`);
- an exit code that contradicts the stream (0 with failures: `atexit` tricks) scores 0.
Infrastructure failures (the sandbox died) are retried on a fresh sandbox, then `infra_error`: no score.

What remains possible: the submission shares the interpreter with pytest and with the plugin, so code that
deliberately patches pytest, the plugin or `os.write` from inside the test process (at import time, say) can
suppress the true records and write its own in order. That cannot be prevented in-process; it is made visible:
`details["flags"]` names every contradiction in the stream, and `details["suspicious"]` the runner internals that
the files the submission changed refer to (pytest, pluggy, `sys.modules`, frames, `gc`, `atexit`, `os._exit`...).
The trainer counts both per step (`reward/flagged`). Suites that only call and compare should use
`rlaif_rewards.call_tests`, where none of this is possible.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Mapping, Sequence
from typing import Literal

from rlaif.env import GradeContext, Grader, Submission
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


RUNNER = """
import json, os, sys
stream = os.dup(1)  # the executor's pipe, for records only
os.dup2(2, 1)       # what pytest and the tests print goes to stderr
import pytest

def record(*fields):
    os.write(stream, (json.dumps(fields) + "\\n").encode())

class Stream:
    def pytest_runtest_logstart(self, nodeid, location):
        record("start", nodeid)

    def pytest_runtest_logreport(self, report):
        record(report.when, report.nodeid, report.outcome)

    def pytest_sessionfinish(self, session, exitstatus):
        record("end", int(exitstatus))

sys.exit(pytest.main(sys.argv[1:], plugins=[Stream()]))
"""
"""The pytest process: the plugin is registered before collection imports anything of the submission."""
SUSPICIOUS = re.compile(r"\b(_?pytest|pluggy|sys\.modules|_getframe|f_back|f_locals|gc\.get_|atexit|os\._exit|"
                        r"builtins|__import__|ctypes|/proc/)")


def read_stream(text: str, expected: Sequence[str]) -> tuple[dict[str, str], list[str], int | None, bool]:
    """From the plugin's records: per expected test `passed`, `failed`, `error`, `skipped` or `missing`; the
    flags the stream raised; the exit status of its end record (None without one); whether any test failed."""
    outcomes: dict[str, str] = {}
    started: set[str] = set()
    called: set[str] = set()
    flags: list[str] = []
    running: str | None = None
    end: int | None = None
    worst = {"passed": 0, "skipped": 1, "error": 2, "failed": 3}

    def fail(tests: Sequence[str], why: str) -> None:
        flags.append(why[:200])
        outcomes.update(dict.fromkeys(tests, "failed"))

    for line in text.splitlines():
        try:
            kind, *fields = json.loads(line)
        except (ValueError, TypeError):
            fail(expected, f"a line that is not a record: {line[:100]!r}")
            continue
        if end is not None:
            fail(expected, f"a record after the end: {line[:100]!r}")
        elif kind == "start" and len(fields) == 1:
            if fields[0] in started:
                fail([fields[0]], f"{fields[0]} started twice")
            started.add(running := fields[0])
        elif kind in ("setup", "call", "teardown") and len(fields) == 2:
            test, outcome = fields
            if test != running:
                fail([test], f"an outcome for {test} while {running} was running")
            elif kind == "call" and test in called:
                fail([test], f"a second outcome for {test}")
            else:
                seen = outcome if kind == "call" else {"passed": "passed", "skipped": "skipped"}.get(outcome, "error")
                called.update([test] if kind == "call" else [])
                outcomes[test] = max(outcomes.get(test, "passed"), seen, key=lambda o: worst.get(o, 3))
        elif kind == "end" and len(fields) == 1 and isinstance(fields[0], int):
            end = fields[0]
        else:
            fail(expected, f"a record of no known kind: {line[:100]!r}")
    tests = {t: outcomes[t] if t in outcomes and (t in called or outcomes[t] != "passed") else "missing"
             for t in expected}
    any_failed = any(o in ("failed", "error") for o in outcomes.values())
    return tests, flags, end, any_failed


def suspicious(files: Mapping[str, bytes], original: Mapping[str, str | bytes]) -> list[str]:
    """The runner internals that the Python files the submission changed refer to (see the module docstring)."""
    changed = [c for p, c in files.items() if p.endswith(".py") and _bytes(original.get(p, b"")) != c]
    return sorted({m for c in changed for m in SUSPICIOUS.findall(c.decode(errors="replace"))})[:10]


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
    ) -> None:
        self.image, self.tests, self.expected = image, dict(tests), list(expected)
        self.original, self.mode, self.timeout_s = dict(original or {}), mode, timeout_s
        self.weight = weight

    async def grade(self, task: Task, submission: Submission, ctx: GradeContext) -> RewardResult:
        files = staged_files(submission.files, self.original, self.tests)
        test_files = sorted({test_id.split("::")[0] for test_id in self.expected})
        cmd = ["python3", "-I", "-c", RUNNER, "-q", "-p", "no:cacheprovider", "--noconftest", "-c", "/dev/null",
               "--rootdir=/work", "-o", "pythonpath=/work", "-o", "addopts=", *test_files]
        run = await ctx.pools.get(self.image).run(cmd, files=files, timeout=self.timeout_s, until_exit=True)
        if run.status == "infra_error":
            return RewardResult(status="infra_error", details={"error": run.error or "sandbox failed"})
        return self._score(run.status, run.exit_code, run.stdout, run.stderr[-4000:],
                           suspicious(submission.files, self.original))

    def _score(self, status: str, exit_code: int | None, stream: str, log: str, hints: list[str]) -> RewardResult:
        details: dict = {"run_status": status, "exit_code": exit_code, "log": log,
                         **({"suspicious": hints} if hints else {})}
        if status not in ("ok", "nonzero_exit") or not stream:
            details["tests"] = {t: "not run" for t in self.expected}
            return RewardResult(status="policy_error", total=0.0, components={self.name: 0.0}, details=details)
        tests, flags, end, any_failed = read_stream(stream, self.expected)
        passed = sum(v == "passed" for v in tests.values())
        # pytest exits 0 exactly when nothing failed, 1 when something did, and says so in its end record;
        # anything else (an atexit hook forcing 0 after failures, a session that never ended) earns nothing.
        consistent = exit_code in (0, 1) and end == exit_code and (exit_code == 1) == any_failed
        details.update(tests=tests, consistent=consistent, **({"flags": flags} if flags else {}))
        if not consistent:
            score = 0.0
        elif self.mode == "all":
            score = float(passed == len(tests))
        else:
            score = passed / len(tests) if tests else 0.0
        return RewardResult(status="ok", total=score, components={self.name: score}, details=details)


def _bytes(content: str | bytes) -> bytes:
    return content.encode() if isinstance(content, str) else content
