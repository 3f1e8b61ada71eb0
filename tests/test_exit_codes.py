"""`rlaif eval`, `collect` and `env check` exit non-zero with one line when nothing could be graded.

A policy server that refuses every request (401, behind the real `openai` client) makes every episode fail on
infrastructure after the preflight passed; `env check` gets the same from a local backend whose bubblewrap cannot
be found. A server that is not running at all is the preflight's to refuse (`tests/test_preflight.py`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlaif.errors import RlaifError
from rlaif.eval.evaluation import check_skipped, infra_fix
from tests.support.fault_server import JudgeEndpoint, Reply

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
REFUSED = "episode: policy endpoint {url}/v1 failed: AuthenticationError: Error code: 401"


def _rlaif(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlaif.cli", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **env}, timeout=120)


def _error_line(done: subprocess.CompletedProcess) -> str:
    """The one error line on stderr (the rest of stderr is the progress bar)."""
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "Traceback" not in done.stderr
    return errors[0]


def test_eval_against_a_refusing_policy_server_fails_with_one_line(tmp_path):
    with JudgeEndpoint(Reply(kind="status", status=401)) as server:
        url = server.url
        done = _rlaif("eval", "pyfunc", "--policy", f"openai:{server.url}/v1:x", "--limit", "2", "--backend",
                      "local", "--out", str(tmp_path))
    assert done.returncode == RlaifError.exit_code
    line = _error_line(done)
    assert line.startswith("error: every episode failed on infrastructure (2 of 2), the first: "
                           + REFUSED.format(url=url)), line
    assert line.endswith("; check that the --policy server is running and answers at that address")
    assert (tmp_path / "summary.json").is_file()  # written before the verdict


def test_collect_from_a_refusing_teacher_fails_with_one_line(tmp_path):
    with JudgeEndpoint(Reply(kind="status", status=401)) as server:
        url = server.url
        done = _rlaif("collect", "pyfunc", "--teacher", f"openai:{server.url}/v1:x", "--limit", "2", "--backend",
                      "local", "--out", str(tmp_path / "c"))
    assert done.returncode == RlaifError.exit_code
    line = _error_line(done)
    assert line.startswith("error: every attempt failed on infrastructure (2 of 2), the first: "
                           + REFUSED.format(url=url)), line
    assert line.endswith("; check that the --teacher server is running and answers at that address")


def test_env_check_without_a_sandbox_fails_with_one_line():
    done = _rlaif("env", "check", "pyfunc", "--backend", "local", "--limit", "1", PATH="/nonexistent")
    assert done.returncode == RlaifError.exit_code
    line = _error_line(done)
    assert line.startswith("error: every answer failed on infrastructure (2 of 2), the first: grading: ")
    assert "bubblewrap" in line


def test_some_skipped_is_a_note_until_it_exceeds_max_skipped():
    skipped = {"episode: sandbox died": 2, "grading: judge timed out": 1}
    assert check_skipped({}, 10, 0.0, "fix") is None
    assert check_skipped(skipped, 10, 0.5, "fix") == (
        "skipped 3 of 10 episodes (30%) on infrastructure; the first: episode: sandbox died")
    with pytest.raises(RlaifError, match=r"^3 of 10 episodes \(30%\) failed on infrastructure, more than "
                                         r"--max-skipped 0.2; the first: episode: sandbox died; fix$"):
        check_skipped(skipped, 10, 0.2, "fix")
    with pytest.raises(RlaifError, match=r"^every attempt failed on infrastructure \(3 of 3\)"):
        check_skipped(skipped, 3, 1.0, "fix", noun="attempt")


def test_a_reason_that_names_its_fix_keeps_it():
    reason = "grading: image rlaif/nosuch:latest is not in the Docker engine; build it"
    with pytest.raises(RlaifError) as err:
        check_skipped({reason: 1}, 1, 1.0, infra_fix(reason))
    assert str(err.value).endswith(f"the first: {reason}")
