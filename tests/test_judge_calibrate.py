"""`rlaif judge calibrate`: a judge's pass verdicts against the truth of unit tests, end to end, with a real local
vLLM judge (OpenAI and Anthropic protocols), real sandboxes, and a run directory's trajectories."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rlaif.registry import load_environment
from rlaif.types import Message, RewardResult, Trajectory
from rlaif_rewards.calibrate import confusion, mutants, wilson

REGEX = r'\{"score": (0|1|0\.[0-9]), "reason": "[a-z ]{1,20}"\}'


def config_file(tmp_path, endpoint: str, **extra) -> str:
    """A judges-only config: one priced judge, no cache, short verdicts."""
    judge = {"name": "tiny", "endpoint": endpoint, "cache": None, "max_tokens": 64, "backoff_s": 0.01,
             "input_usd_per_mtok": 3.0, "output_usd_per_mtok": 15.0, **extra}
    path = tmp_path / "judge.yaml"
    path.write_text(json.dumps({"reward": {"judges": [judge]}}))  # JSON is YAML
    return str(path)


def calibrate(config: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlaif.cli", "judge", "calibrate", config, *args],
                          capture_output=True, text=True, timeout=300)


def rows_of(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_figures_hold(report: dict) -> None:
    for name in ("precision", "recall", "false_pass_rate"):
        figure = report[name]
        if figure["trials"]:
            low, high = figure["ci95"]
            assert low <= figure["value"] <= high and figure["value"] == figure["successes"] / figure["trials"]
        else:
            assert figure["value"] is None and figure["ci95"] is None
    assert sum(report["counts"].values()) == report["answers"] == sum(report["by_source"].values())


@pytest.mark.unit
def test_wilson_intervals_on_known_numbers():
    low, high = wilson(8, 10)
    assert low == pytest.approx(0.4902, abs=5e-4) and high == pytest.approx(0.9433, abs=5e-4)
    assert wilson(0, 6)[0] == 0.0 and wilson(6, 6)[1] == 1.0 and wilson(0, 0) is None
    assert wilson(50, 100) == pytest.approx((0.4038, 0.5962), abs=5e-4)


@pytest.mark.unit
def test_confusion_counts_add_up_and_keep_failed_verdicts_apart():
    rows = [{"truth": "pass", "judge_pass": True}, {"truth": "fail", "judge_pass": True},
            {"truth": "fail", "judge_pass": False}, {"truth": "pass", "judge_pass": False},
            {"truth": "pass", "judge_pass": None}, {"truth": None, "judge_pass": True}]
    assert confusion(rows) == {"true_pass": 1, "false_pass": 1, "true_fail": 1, "false_fail": 1,
                               "failed_verdicts": 1, "truth_unknown": 1}


@pytest.mark.unit
def test_mutants_are_deterministic_breakages_of_the_entry_point():
    code = "def helper(x):\n    return x + 1\n\ndef f(xs):\n    if len(xs) < 3:\n        return 0\n    return sum(xs)\n"
    assert mutants(code, "f") == mutants(code, "f")
    broken = mutants(code, "f")
    assert set(broken) == {"return_none", "off_by_one", "swap_comparison"}
    assert "return None" in broken["return_none"] and "return x + 1" in broken["return_none"]  # helper kept
    assert "len(xs) < 4" in broken["off_by_one"] and "len(xs) >= 3" in broken["swap_comparison"]


@pytest.mark.docker
@pytest.mark.vllm
def test_calibrating_a_real_openai_compatible_judge_on_pyfunc(vllm_server, base_image, tmp_path):
    config = config_file(tmp_path, f"openai:{vllm_server}/v1:tiny",
                         extra_body={"structured_outputs": {"regex": REGEX}})
    out = tmp_path / "rows.jsonl"
    done = calibrate(config, "--env", "pyfunc", "--limit", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert "precision" in done.stderr and "false_pass_rate" in done.stderr  # the table, for people
    assert_figures_hold(report)
    rows = rows_of(out)
    assert len(rows) == report["verdicts"] == report["answers"] + sum(f["answers"] for f in report["fooling"].values())
    assert {r["truth"] for r in rows if r["source"] == "reference"} == {"pass"}
    assert {r["truth"] for r in rows if r["source"] == "fooling"} == {"fail"}
    assert report["truth"]["reference:pass"] == 2 and report["by_source"]["broken"] >= 2
    assert all(r["truth"] == ("pass" if r["tests"]["tests"] == 1.0 else "fail") for r in rows)  # the tests decide
    assert report["failed_verdicts"] == 0 and report["cost_per_verdict"] > 0
    restated = report["fooling"]["restated"]
    assert restated["short_circuit"] == restated["answers"] == 2  # a verbatim repeat: 0 without a call
    assert restated["pass_rate"]["value"] == 0.0


@pytest.mark.docker
@pytest.mark.vllm
def test_an_anthropic_format_judge_that_cannot_parse_counts_failed_verdicts_apart(vllm_server, base_image, tmp_path,
                                                                                  monkeypatch):
    monkeypatch.setenv("ANTHROPIC_BASE_URL", vllm_server)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "dummy")
    config = config_file(tmp_path, "anthropic:tiny", retries=0)
    out = tmp_path / "rows.jsonl"
    done = calibrate(config, "--env", "pyfunc", "--limit", "1", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    report, rows = json.loads(done.stdout), rows_of(out)
    assert_figures_hold(report)
    failed = [r for r in rows if r["judge_status"] == "infra_error"]
    assert failed and all(r["judge_pass"] is None and r["judge_score"] is None for r in failed)
    assert report["failed_verdicts"] == len(failed)
    assert report["counts"]["failed_verdicts"] == sum(r["source"] != "fooling" for r in failed)
    for kind, figures in report["fooling"].items():
        of_kind = [r for r in rows if r["kind"] == kind]
        assert figures["failed_verdicts"] == sum(r["judge_status"] == "infra_error" for r in of_kind)
        assert figures["pass_rate"]["trials"] == len(of_kind) - figures["failed_verdicts"]


@pytest.mark.docker
@pytest.mark.vllm
def test_samples_of_a_run_directory_are_judged_with_their_recorded_truth(vllm_server, base_image, tmp_path):
    task = load_environment("pyfunc").tasks("train")[0]
    wrong = f"```python\ndef {task.data['entry_point']}(*args):\n    return None\n```"
    right = f"```python\n{task.reference}```"

    def row(name: str, task_id: str, answer: str, score: float) -> str:
        messages = [Message(role="user", content=task.prompt), Message(role="assistant", content=answer)]
        traj = Trajectory(id=name, task_id=task_id, messages=messages,
                          reward=RewardResult(total=score, components={"tests": score}))
        extra = {"group_index": 0, "dropped": None}  # what the trainer adds to each row
        return json.dumps({**traj.model_dump(mode="json"), **extra}) + "\n"

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "trajectories.jsonl").write_text(row("right", task.id, right, 1.0) + row("wrong", task.id, wrong, 0.0)
                                                + row("elsewhere", "pyfunc/no_such_task", right, 1.0))
    config = config_file(tmp_path, f"openai:{vllm_server}/v1:tiny",
                         extra_body={"structured_outputs": {"regex": REGEX}})
    out = tmp_path / "rows.jsonl"
    done = calibrate(config, "--env", "pyfunc", "--limit", "2", "--from", str(run_dir), "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert_figures_hold(report)
    samples = {r["trajectory"]: r for r in rows_of(out) if r["source"] == "sample"}
    assert set(samples) == {"right", "wrong"}
    assert (samples["right"]["truth"], samples["wrong"]["truth"]) == ("pass", "fail")
    assert samples["right"]["answer"] == right and samples["wrong"]["answer"] == wrong  # what for_judge gives
    assert report["by_source"]["sample"] == 2 and sum(report["skipped_samples"].values()) == 1


@pytest.mark.unit
@pytest.mark.parametrize("case", ["unknown env", "no judges", "no trajectories"])
def test_bad_input_is_one_line_naming_the_fix(tmp_path, case):
    config = config_file(tmp_path, "openai:http://127.0.0.1:9/v1:tiny")
    args = {"unknown env": ["--env", "judged_qa"], "no judges": ["--env", "pyfunc"],
            "no trajectories": ["--env", "pyfunc", "--from", str(tmp_path)]}[case]
    if case == "no judges":
        (tmp_path / "judge.yaml").write_text("reward: {judges: []}\n")
    done = calibrate(config, *args)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ")
    assert {"unknown env": "pyfunc or repo_repair", "no judges": "reward.judges",
            "no trajectories": "trajectories.jsonl"}[case] in lines[0]
