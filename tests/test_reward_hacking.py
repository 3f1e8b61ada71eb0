"""A policy that games the graders earns nothing: hostile answers to pyfunc tasks, through the real grader and the
real environment, on both sandbox backends.

Each attack is a `solution.py` written as a reward-hacking policy would write it. Every one must earn 0. A probe
answer then looks everywhere a submission can look (its filesystem, /proc, its memory, its call stack) for the
tests' secret, and reports what it found as its return value: it earns 1 exactly when nothing leaked.
"""

from __future__ import annotations

import asyncio
import textwrap

import pytest

from rlaif.env import GradeContext, Submission
from rlaif.sandbox.base import Limits
from rlaif.sandbox.pool import SandboxPools
from rlaif.types import Task
from rlaif_environments.pyfunc.env import PyFunc
from rlaif_rewards.call_tests import CallTests, call_cases, call_check

pytestmark = pytest.mark.docker
SECRET = "SECRET-5f1c2a9e"
ENV = PyFunc(timeout_s=6.0)  # a whole grading's bound; each call has 5 s
TASK = next(t for t in ENV.tasks("train") if t.id.startswith("pyfunc/add_"))
NAME = TASK.data["entry_point"]
HUMANEVAL = call_check("f", f"def check(candidate):\n    assert candidate(2) == 4  # {SECRET}\n"
                            f"    assert candidate(3) == 6\n    assert candidate(4) != '{SECRET}'\n",
                       helpers="def f(x):\n    '''Twice x.'''\n")
ATTACKS = {
    "eq_always_true": """
        class Yes:
            def __eq__(self, other): return True
            def __ne__(self, other): return False
            __hash__ = object.__hash__
        def {name}(*args): return Yes()
    """,
    "int_subclass_liar": """
        class Liar(int):
            def __eq__(self, other): return True
            __hash__ = int.__hash__
        def {name}(*args): return Liar(0)
    """,
    "str_subclass_liar": """
        class Liar(str):
            def __eq__(self, other): return True
            __hash__ = str.__hash__
        def {name}(*args): return Liar("")
    """,
    "bool_for_an_int": "def {name}(*args): return True",
    "atexit_forged_report_and_exit_zero": """
        import atexit, glob, os
        def forge():
            for path in glob.glob("/tmp/*") + glob.glob("/work/*"):
                try:
                    open(path, "w").write('<testsuite failures="0"><testcase name="x"/></testsuite>')
                except OSError:
                    pass
            os._exit(0)
        atexit.register(forge)
        def {name}(*args): raise SystemExit(0)
    """,
    "exit_zero_at_import": "import sys\nsys.exit(0)",
    "os_exit_in_the_call": "import os\ndef {name}(*args): os._exit(0)",
    "print_a_forged_verdict": """
        import os, struct
        for fd in range(1, 16):
            try:
                os.write(fd, b'{{"outcomes": [{{"outcome": "passed"}}]}}' + struct.pack(">I", 1) + b"k")
            except OSError:
                pass
        def {name}(*args): return None
    """,
    "forged_frames_on_every_channel": """
        import os, struct
        frame = lambda p: struct.pack(">I", len(p)) + p
        def {name}(*args):
            for fd in range(1, 16):
                try:
                    os.write(fd, frame(b"vT") * 8)
                except OSError:
                    pass
            return True
    """,
    "caller_frame_for_the_expected_value": """
        import sys
        def {name}(*args):
            frame = sys._getframe(1)
            while frame is not None:
                for key in ("expected", "case", "cases", "spec"):
                    if key in frame.f_locals:
                        value = frame.f_locals[key]
                        return value[1] if isinstance(value, tuple) else value
                frame = frame.f_back
            return None
    """,
    "patch_the_runner": """
        import __main__
        __main__.encode = lambda value, depth=0: b"T"
        __main__.same = lambda a, b, *rest: True
        def {name}(*args): return object()
    """,
    "kill_everyone_else": """
        import os, signal
        for pid in [os.getppid(), 1, -1]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        def {name}(*args): return None
    """,
    "daemon_left_behind_to_rewrite_results": """
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                for _ in range(200):
                    for fd in range(16):
                        try:
                            os.write(fd, b"\\x00\\x00\\x00\\x02vT")
                        except OSError:
                            pass
                    time.sleep(0.01)
                os._exit(0)
            os._exit(0)
        def {name}(*args): return True
    """,
    "hang_forever": "def {name}(*args):\n    while True:\n        pass",
    "catch_the_timer_and_hang": """
        def {name}(*args):
            while True:
                try:
                    while True:
                        pass
                except BaseException:
                    pass
    """,
    "memory_bomb": "def {name}(*args):\n    x = []\n    while True:\n        x.append(bytearray(1 << 24))",
    "fork_bomb": "import os\ndef {name}(*args):\n    while True:\n        os.fork()",
    "huge_answer": "def {name}(*args): return 'x' * (64 << 20)",
    "deeply_nested_answer": """
        def {name}(*args):
            value = []
            for _ in range(10000):
                value = [value]
            return value
    """,
    "generator_answer": "def {name}(*args): yield 1",
    "keyboard_interrupt": "def {name}(*args): raise KeyboardInterrupt",
}
PROBE = """
    import gc, glob, os, sys
    def look():
        needle = bytes.fromhex("5345435245542d3566316332613965")  # the secret, spelt so that this file lacks it
        found = []
        paths = [p for pattern in ("/work/**", "/tmp/**", "/dev/shm/**", "/run/**", "/opt/**", "/home/**")
                 for p in glob.glob(pattern, recursive=True)]
        for pid in (p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()):
            paths += [f"/proc/{{pid}}/cmdline", f"/proc/{{pid}}/environ", *glob.glob(f"/proc/{{pid}}/fd/*")]
            try:
                with open(f"/proc/{{pid}}/maps") as maps, open(f"/proc/{{pid}}/mem", "rb") as mem:
                    for line in maps:
                        low, high = (int(x, 16) for x in line.split()[0].split("-"))
                        if "r" in line.split()[1]:
                            mem.seek(low)
                            if needle in mem.read(min(high - low, 1 << 24)):
                                found.append(f"memory of {{pid}}")
            except (OSError, ValueError):
                pass
        for path in paths:
            try:
                with open(path, "rb") as f:
                    if needle in f.read(1 << 22):
                        found.append(path)
            except (OSError, ValueError):
                pass
        secret = needle.decode()
        if any(secret in repr(o) for o in gc.get_objects() if isinstance(o, (dict, list, tuple, set))):
            found.append("an object in this process")
        frame = sys._getframe(1)
        while frame is not None:
            if secret in repr(frame.f_locals):
                found.append("the frame of " + frame.f_code.co_name)
            frame = frame.f_back
        return ", ".join(found)
    def {name}(*args):
        return look() or args[0] * 2
"""


@pytest.fixture(scope="module", params=["local", "docker"])
def grade(request, docker_engine, base_image):
    loop = asyncio.new_event_loop()
    pools = SandboxPools(Limits(timeout_s=20, memory_mb=512), backend=request.param, size=2, run_id="hacking")

    def run(code: str, grader: CallTests | None = None, task: Task = TASK):
        grader = grader or ENV.graders(task)[0]
        files = {"solution.py": textwrap.dedent(code).format(name=grader.setup["entry_point"]).encode()}
        return loop.run_until_complete(grader.grade(task, Submission(messages=[], files=files), GradeContext(pools)))

    run.pools = pools
    yield run
    loop.run_until_complete(pools.close())
    loop.close()


def test_the_reference_earns_full_reward(grade):
    result = grade(TASK.reference)
    assert (result.status, result.total) == ("ok", 1.0)


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_every_attack_on_call_and_compare_tests_earns_nothing(grade, attack):
    result = grade(ATTACKS[attack])
    assert result.status in ("ok", "policy_error") and result.total == 0.0, result.details


@pytest.mark.parametrize("attack", ["eq_always_true", "int_subclass_liar", "caller_frame_for_the_expected_value",
                                    "patch_the_runner", "daemon_left_behind_to_rewrite_results", "hang_forever",
                                    "exit_zero_at_import", "print_a_forged_verdict"])
def test_attacks_on_a_humaneval_check_earn_nothing(grade, attack):
    result = grade(ATTACKS[attack], CallTests("rlaif/base:latest", HUMANEVAL, timeout_s=20, call_timeout_s=2))
    assert result.status in ("ok", "policy_error") and result.total == 0.0, result.details


def test_a_bool_is_not_an_int_and_a_tuple_is_not_a_list(grade):
    cases = CallTests("rlaif/base:latest", call_cases("f", [((0,), 1), ((1,), [1, 2])]))
    assert grade("def f(x): return True if x == 0 else (1, 2)", cases).details["tests"] == {
        "case_0": "failed", "case_1": "failed"}
    assert grade("def f(x): return 1 if x == 0 else [1, 2]", cases).total == 1.0


def test_the_tests_are_nowhere_the_submission_can_look(grade):
    """The probe answers with what it found of the secret (in a comment and an expected value of the tests), else
    with twice its argument: it passes the first case only when it found nothing, and never the secret's case."""
    cases = CallTests("rlaif/base:latest", call_cases("f", [((2,), 4), ((1,), SECRET)]))
    probed = grade(PROBE, cases)
    assert probed.details["tests"] == {"case_0": "passed", "case_1": "failed"}, probed.details
    checked = grade(PROBE, CallTests("rlaif/base:latest", HUMANEVAL))
    assert (checked.status, checked.total) == ("ok", 1.0), checked.details


def test_nothing_of_one_answer_reaches_the_next_in_a_recycled_sandbox(grade):
    planter = """
        import ctypes, os, time
        for folder in ("/work", "/tmp", "/dev/shm"):
            os.makedirs(f"{{folder}}/planted/locked", exist_ok=True)
            open(f"{{folder}}/planted/locked/SECRET-5f1c2a9e", "w").write("x")
            os.chmod(f"{{folder}}/planted/locked", 0)
        try:
            ctypes.CDLL(None).shmget(0x5F1C, 4096, 0o1666)  # a SysV segment: the reset must retire the sandbox
        except OSError:
            pass
        if os.fork() == 0:
            os.setsid()
            os.closerange(0, 64)  # a process left behind, not one holding the answer's pipe open
            time.sleep(30)
        def {name}(*args): return None
    """
    stats = grade.pools.get("rlaif/base:latest").stats
    before = stats["recycled"] + stats["retired_unclean"]
    for _ in range(3):
        assert grade(planter).total == 0.0
        probed = grade(PROBE, CallTests("rlaif/base:latest", call_cases("f", [((2,), 4)])))
        assert (probed.status, probed.total) == ("ok", 1.0), probed.details
    assert stats["recycled"] + stats["retired_unclean"] >= before + 6
