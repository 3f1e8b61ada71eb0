"""`rlaif judge score|check` and `rlaif env check judged_qa` with a judge configured.

The judge commands get judges-only configs (no `model` section), which `rlaif train` refuses.

The judge is a local endpoint behind the real OpenAI SDK, scripted to behave like a sensible judge (1 when the
answer contains the reference answer, else 0) or like a gullible one (always 1)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.support.fault_server import JudgeEndpoint, Reply

pytestmark = pytest.mark.unit


def sensible(request: dict) -> Reply:
    content = request["body"]["messages"][-1]["content"]
    fenced = {label: text for _, label, text in re.findall(r"(`{3,})(reference|answer)\n(.*?)\n\1", content, re.S)}
    score = 1.0 if fenced.get("reference", "\0") in fenced.get("answer", "") else 0.0
    criteria = re.findall(r"^- (\w+) \(weight", content, re.M)
    return Reply(text=json.dumps({"criteria": [{"name": c, "reason": "checked", "score": score} for c in criteria],
                                  "score": score, "reason": "compared with the reference"}))


def gullible(request: dict) -> Reply:
    criteria = re.findall(r"^- (\w+) \(weight", request["body"]["messages"][-1]["content"], re.M)
    return Reply(text=json.dumps({"criteria": [{"name": c, "reason": "great", "score": 1} for c in criteria],
                                  "score": 1, "reason": "great"}))


def config_file(tmp_path, url: str) -> str:
    """A judges-only config (no `model` section) with one judge at `url`."""
    path = tmp_path / "judge.yaml"
    path.write_text(f"reward:\n  judges:\n    - endpoint: openai:{url}/v1:judge\n"
                    f"      cache: null\n      backoff_s: 0.01\n      input_usd_per_mtok: 1.0\n")
    return str(path)


def rlaif(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlaif.cli", *args], capture_output=True, text=True, timeout=300)


def test_judge_score_rescores_rows_and_resumes(tmp_path):
    rows = [{"id": "a", "prompt": "Capital of France?", "completion": "It is Paris.", "reference": "Paris"},
            {"id": "b", "prompt": "Capital of France?", "completion": "It is Lyon.", "reference": "Paris"},
            {"id": "c", "prompt": "Capital of France?", "completion": "", "reference": "Paris"}]
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    with JudgeEndpoint(sensible) as endpoint:
        config = config_file(tmp_path, endpoint.url)
        first = rlaif("judge", "score", "--config", config, "--input", str(source), "--output", str(out))
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
        second = rlaif("judge", "score", "--config", config, "--input", str(source), "--output", str(out))
        calls = len(endpoint.requests)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    scored = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert sorted(scored) == ["a", "b", "c"]
    assert len(out.read_text().splitlines()) == 3, "resuming skipped the rows already scored"
    assert (scored["a"]["score"], scored["b"]["score"], scored["c"]["score"]) == (1.0, 0.0, 0.0)
    assert scored["a"]["status"] == "ok" and scored["a"]["usage"]["input_tokens"] == 100
    assert scored["c"]["reason"].startswith("empty or degenerate answer") and calls == 2
    assert "1 already done" not in first.stdout and "(2 already done)" in second.stdout


def test_judge_score_names_a_bad_row(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "prompt": "p"}\n')
    with JudgeEndpoint(sensible) as endpoint:
        done = rlaif("judge", "score", "--config", config_file(tmp_path, endpoint.url), "--input", str(source),
                     "--output", str(tmp_path / "o.jsonl"))
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {source}:1: row is missing completion; rows need id, prompt, completion " \
                                  "(reference and group are optional)"


def test_judge_check_passes_a_sensible_judge_and_fails_a_gullible_one(tmp_path):
    with JudgeEndpoint(sensible) as endpoint:
        good = rlaif("judge", "check", "--config", config_file(tmp_path, endpoint.url), "--limit", "4", "--json")
    with JudgeEndpoint(gullible) as endpoint:
        bad = rlaif("judge", "check", "--config", config_file(tmp_path, endpoint.url), "--limit", "4", "--json")
    good_report, bad_report = json.loads(good.stdout), json.loads(bad.stdout)
    assert good.returncode == 0, good_report
    assert good_report["canaries"]["reference"]["pass_rate"] == 1.0
    assert all(row["false_pass_rate"] == 0.0 for name, row in good_report["canaries"].items() if name != "reference")
    assert bad.returncode == 1
    rates = {name: row.get("false_pass_rate") for name, row in bad_report["canaries"].items()}
    assert rates["reasoning_opener"] == 1.0 and rates["injection"] == 1.0
    assert rates["empty"] == rates["colon"] == rates["question_repeated"] == 0.0, "short-circuited without a call"


def test_judge_check_says_why_verdicts_failed(tmp_path):
    with JudgeEndpoint(lambda request: Reply(text="I think it is fine.")) as endpoint:
        done = rlaif("judge", "check", "--config", config_file(tmp_path, endpoint.url), "--limit", "1")
    assert done.returncode == 1, "a judge whose verdicts never parse is a miss, not a pass"
    causes = [line for line in done.stderr.splitlines() if "failed verdict" in line]
    assert len(causes) == 1 and causes[0].startswith("3 failed verdicts: "), done.stderr
    assert "verdict" in causes[0].split(": ", 1)[1].lower() or "json" in causes[0].lower(), causes


def test_train_refuses_a_judges_only_config_naming_model_path(tmp_path):
    done = rlaif("train", config_file(tmp_path, "http://127.0.0.1:9"))
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["error: missing required config value 'model.path'; set it in the file or "
                                        "pass model.path=..."]


@pytest.mark.docker
def test_judged_qa_passes_env_check_with_a_judge_configured(tmp_path, base_image):
    with JudgeEndpoint(sensible) as endpoint:
        done = rlaif("env", "check", "judged_qa", "--config", config_file(tmp_path, endpoint.url), "--json")
    report = json.loads(done.stdout)
    assert done.returncode == 0, report["failures"][:3]
    assert report["reference_passed"] == report["tasks"] == 30 and report["empty_passed"] == 0
    assert report["judge_skipped"] == 0 and report["notes"] == []
