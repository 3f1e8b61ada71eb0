"""Pytest grading is as hard to forge as a shared interpreter allows: tests run after the episode, in a fresh
sandbox, on the submission's files minus anything planted; the grade comes from outcomes streamed to the
executor as they happen; what stays possible (patching pytest from inside) is flagged."""

from __future__ import annotations

import asyncio
import json

import pytest

from rlaif.env import GradeContext, Submission
from rlaif.sandbox.base import Limits
from rlaif.sandbox.pool import SandboxPools
from rlaif.train.groups import ScoredGroup
from rlaif.train.metrics import batch_metrics
from rlaif.types import Message, RewardResult, Task, Trajectory
from rlaif_rewards.unit_tests import UnitTests, read_stream, staged_files

pytestmark = pytest.mark.docker

TESTS = {"tests/test_calc.py": (
    "from calc import add, sub\n\n"
    "def test_add():\n    assert add(2, 3) == 5\n\n"
    "def test_sub():\n    assert sub(5, 3) == 2\n\n"
    "class TestBoth:\n    def test_zero(self):\n        assert add(0, 0) == sub(0, 0) == 0\n")}
EXPECTED = ["tests/test_calc.py::test_add", "tests/test_calc.py::test_sub", "tests/test_calc.py::TestBoth::test_zero"]
ORIGINAL = {"calc.py": "def add(a, b):\n    return a - b\n\ndef sub(a, b):\n    return a - b\n",
            "pyproject.toml": "[project]\nname = 'calc'\n"}
CORRECT = "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n"
HALF = "def add(a, b):\n    return a * b\n\ndef sub(a, b):\n    return a - b\n"
TASK = Task(id="tamper/calc", env="test", prompt="fix calc")


@pytest.fixture(scope="module")
def grade(docker_engine, base_image):
    loop = asyncio.new_event_loop()
    pools = SandboxPools(Limits(timeout_s=20), size=2, run_id="tamper")

    def run(files: dict[str, str], mode: str = "fraction", timeout_s: float = 20.0):
        grader = UnitTests(base_image, TESTS, EXPECTED, original=ORIGINAL, mode=mode, timeout_s=timeout_s)
        submission = Submission(messages=[Message(role="assistant", content="done")],
                                files={k: v.encode() for k, v in files.items()})
        return loop.run_until_complete(grader.grade(TASK, submission, GradeContext(pools)))

    yield run
    loop.run_until_complete(pools.close())
    loop.close()


def test_correct_code_earns_full_reward_and_per_test_results_are_kept(grade):
    result = grade({"calc.py": CORRECT})
    assert (result.status, result.total) == ("ok", 1.0)
    assert result.details["tests"] == {t: "passed" for t in EXPECTED}


def test_partial_code_earns_the_fraction_or_nothing(grade):
    assert grade({"calc.py": HALF}).total == pytest.approx(2 / 3)
    assert grade({"calc.py": HALF}, mode="all").total == 0.0
    both_wrong = "def add(a, b):\n    return a * b\n\ndef sub(a, b):\n    return a + b\n"
    assert grade({"calc.py": both_wrong}).total == pytest.approx(1 / 3)


def test_a_planted_conftest_that_marks_everything_passed_does_not_count(grade):
    conftest = ("import pytest\n\n@pytest.hookimpl(hookwrapper=True)\ndef pytest_runtest_makereport(item, call):\n"
                "    outcome = yield\n    report = outcome.get_result()\n    report.outcome = 'passed'\n")
    result = grade({"calc.py": HALF, "conftest.py": conftest, "tests/conftest.py": conftest})
    assert result.total == pytest.approx(2 / 3)


def test_modified_tests_are_replaced_by_the_tasks_own(grade):
    rigged = {"tests/test_calc.py": "def test_add():\n    pass\n\ndef test_sub():\n    pass\n"}
    assert grade({"calc.py": HALF, **rigged}).total == pytest.approx(2 / 3)


def test_exiting_zero_at_exit_after_failures_earns_nothing(grade):
    atexit_trick = HALF + "\nimport atexit, os\natexit.register(lambda: os._exit(0))\n"
    result = grade({"calc.py": atexit_trick})
    assert result.total == 0.0 and result.details["tests"]["tests/test_calc.py::test_sub"] == "passed"
    assert result.details["consistent"] is False


def test_sys_exit_zero_at_import_earns_nothing(grade):
    result = grade({"calc.py": "import sys\nsys.exit(0)\n"})
    assert result.total == 0.0


def test_planted_config_reward_files_and_shadow_modules_do_not_count(grade):
    planted = {
        "calc.py": HALF,
        "pytest.ini": "[pytest]\naddopts = -p no:junitxml --co\n",
        "setup.cfg": "[tool:pytest]\naddopts = --co\n",
        "pyproject.toml": "[tool.pytest.ini_options]\naddopts = '--co'\n",
        "sitecustomize.py": "import os\nos._exit(0)\n",
        "evil.pth": "import os; os._exit(0)\n",
        "pytest.py": "import sys\nsys.exit(0)\n",
        "reward.txt": "1.0\n",
        "report.xml": '<testsuite><testcase classname="tests.test_calc" name="test_add" file="tests/test_calc.py"/>'
                      "</testsuite>",
    }
    result = grade(planted)
    assert result.total == pytest.approx(2 / 3)
    assert result.details["tests"]["tests/test_calc.py::test_add"] == "failed"


def test_a_hanging_solution_times_out_and_scores_zero_as_a_policy_error(grade):
    result = grade({"calc.py": "while True:\n    pass\n"}, timeout_s=3)
    assert (result.status, result.total) == ("policy_error", 0.0)
    assert result.details["run_status"] == "timeout"


def test_staging_keeps_the_tasks_originals_of_plantable_files():
    staged = staged_files({"calc.py": b"x", "pyproject.toml": b"evil", "a/conftest.py": b"evil", "x.pth": b""},
                          ORIGINAL, TESTS)
    assert staged == {"calc.py": b"x", "pyproject.toml": ORIGINAL["pyproject.toml"].encode(),
                      "tests/test_calc.py": TESTS["tests/test_calc.py"].encode()}


FORGE = """
import json, os
def forge(*records):
    for fd in range(1, 32):
        try:
            os.write(fd, "".join(json.dumps(r) + "\\n" for r in records).encode())
        except OSError:
            pass
"""


def test_records_forged_at_import_fail_every_test_they_contradict_and_are_flagged(grade):
    forged = [r for t in EXPECTED for r in (["start", t], ["call", t, "passed"])]
    result = grade({"calc.py": HALF + FORGE + f"forge(*{forged!r})\n"})
    assert result.total == 0.0 and result.details["flags"]


def test_a_pass_forged_inside_a_failing_call_cannot_overwrite_its_failure(grade):
    lying_add = FORGE + ("def add(a, b):\n    forge(['call', 'tests/test_calc.py::test_add', 'passed'])\n"
                         "    return a * b\n\ndef sub(a, b):\n    return a - b\n")
    result = grade({"calc.py": lying_add})
    assert result.details["tests"]["tests/test_calc.py::test_add"] == "failed" and result.details["flags"]
    assert result.total <= grade({"calc.py": HALF}).total


def test_a_process_left_behind_adds_nothing_to_the_verdict(grade):
    forged = [r for t in EXPECTED for r in (["start", t], ["call", t, "passed"])] + [["end", 0]]
    daemon = HALF + FORGE + ("import time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(1.5)\n"
                             f"    forge(*{forged!r})\n    os._exit(0)\n")
    result = grade({"calc.py": daemon})
    assert result.total == pytest.approx(2 / 3) and "flags" not in result.details


def test_patching_pytest_from_inside_stays_possible_and_is_flagged_and_counted(grade):
    """The documented hole: a submission that rewrites pytest's reports in its own process. It is flagged, and
    the trainer counts flagged answers per step."""
    patch = HALF + ("import _pytest.reports\ninit = _pytest.reports.TestReport.__init__\n"
                    "def forced(self, *args, **kwargs):\n    init(self, *args, **kwargs)\n    self.outcome = 'passed'\n"
                    "_pytest.reports.TestReport.__init__ = forced\n")
    result = grade({"calc.py": patch})
    assert "_pytest" in result.details["suspicious"]
    reward = RewardResult(total=result.total, details={"tests": result.details})
    traj = Trajectory(id="x", task_id=TASK.id, reward=reward)
    assert batch_metrics([ScoredGroup(0, 0, [traj])], 0)["reward/flagged"] == 1.0


def test_the_stream_is_read_in_order_and_every_contradiction_fails_its_test():
    a, b = EXPECTED[:2]
    lines = [["start", a], ["setup", a, "passed"], ["call", a, "passed"], ["teardown", a, "passed"],
             ["start", b], ["call", a, "passed"], ["call", b, "passed"], ["end", 0]]
    tests, flags, end, failed = read_stream("\n".join(json.dumps(r) for r in lines), EXPECTED)
    assert tests == {a: "failed", b: "passed", EXPECTED[2]: "missing"} and end == 0 and failed and len(flags) == 1
    tests, flags, _, _ = read_stream(json.dumps(["start", a]) + "\nnot json\n", EXPECTED)
    assert set(tests.values()) == {"failed"} and flags
    tests, _, _, failed = read_stream("\n".join(json.dumps(r) for r in [["start", a], ["setup", a, "failed"]]),
                                      EXPECTED)
    assert tests[a] == "error" and failed
