"""`rlaif collect`: teacher trajectories graded in real sandboxes, kept by rejection sampling, resumable.

The reference teacher (each task's reference solution, replayed) earns 1 everywhere; the tiny random model
served by a real vLLM server earns about 0, which is what the rejection path needs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlaif.distill.dataset import CollectionDir
from tests.support.fault_server import JudgeEndpoint, Reply

STATUSES = ("kept", "rejected", "failed", "duplicate")


def _collect(out: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlaif.cli", "collect", *args, "--out", str(out)],
                          capture_output=True, text=True, timeout=timeout)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def dying_server():
    """The URL of a server that accepts connections (the preflight's check) and closes each without an answer."""
    with JudgeEndpoint(Reply(kind="hang")) as server:
        yield server.url


@pytest.mark.docker
def test_reference_teacher_gives_a_loadable_dataset_of_full_reward_rows(base_image, tiny_model, tmp_path):
    import datasets
    from transformers import AutoTokenizer

    out = tmp_path / "ref"
    done = _collect(out, "pyfunc", "--teacher", "reference", "--limit", "3", "-n", "2", "--concurrency", "3")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = datasets.load_dataset("json", data_files=str(out / "train.jsonl"), split="train")
    ledger = _lines(out / "attempts.jsonl")
    assert len(rows) == 3 and all(row["reward"] == 1.0 for row in rows)
    assert sorted(line["status"] for line in ledger) == ["duplicate"] * 3 + ["kept"] * 3, \
        "the deterministic reference gives the same answer twice: the second is a duplicate"
    assert {row["id"] for row in rows} == {line["id"] for line in ledger if line["status"] == "kept"}
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["kept"], summary["duplicate"], summary["rejected"], summary["failed"]) == (3, 3, 0, 0)
    assert sum(summary[s] for s in STATUSES) == summary["attempts"] == len(ledger) == 6
    assert summary["teacher"] == "reference" and summary["cost_usd"] == 0.0
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    for row in rows:
        assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
        assert row["provenance"]["task_variant"] == "original" and row["provenance"]["system_variant"] == 0
        text = tokenizer.apply_chat_template(row["messages"], tools=json.loads(row["tools"]) or None, tokenize=False)
        assert row["messages"][-1]["content"] in text
    assert "kept" in done.stdout and str(out) in done.stdout


@pytest.mark.docker
def test_tool_calls_of_a_multi_turn_teacher_render_with_their_tools(base_image, tiny_model, tmp_path):
    import datasets
    from transformers import AutoTokenizer

    out = tmp_path / "repair"
    done = _collect(out, "repo_repair", "--teacher", "reference", "--limit", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    row = datasets.load_dataset("json", data_files=str(out / "train.jsonl"), split="train")[0]
    tools = json.loads(row["tools"])
    assert {t["function"]["name"] for t in tools} >= {"bash", "write_file", "submit"}
    calls = row["messages"][2]["tool_calls"]
    assert calls[-1]["function"] == {"name": "submit", "arguments": "{}"}
    assert [m["tool_call_id"] for m in row["messages"] if m["role"] == "tool"] == [c["id"] for c in calls]
    text = AutoTokenizer.from_pretrained(tiny_model).apply_chat_template(row["messages"], tools=tools, tokenize=False)
    assert '"name": "submit"' in text and "<tools>" in text


@pytest.mark.vllm
@pytest.mark.docker
def test_a_model_teacher_below_the_bar_is_rejected_and_kept_with_provenance_at_min_reward_0(vllm_server, base_image,
                                                                                             tmp_path):
    teacher = f"openai:{vllm_server}/v1:tiny"
    common = ["pyfunc", "--teacher", teacher, "--limit", "2", "-n", "2", "--max-tokens", "16"]
    rejected = _collect(tmp_path / "strict", *common)
    assert rejected.returncode == 0, rejected.stderr[-3000:]
    assert [line["status"] for line in _lines(tmp_path / "strict" / "attempts.jsonl")] == ["rejected"] * 4
    assert _lines(tmp_path / "strict" / "train.jsonl") == []

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("You are terse.\n---\n")
    out = tmp_path / "lenient"
    kept = _collect(out, *common, "--min-reward", "0", "--temperature", "0.7", "--system-prompts", str(prompts),
                    "--input-usd-per-mtok", "1", "--output-usd-per-mtok", "2")
    assert kept.returncode == 0, kept.stderr[-3000:]
    rows = _lines(out / "train.jsonl")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kept"] == len(rows) >= 6 and summary["kept"] + summary["duplicate"] == 8
    for row in rows:
        p = row["provenance"]
        assert p["teacher"] == teacher and p["temperature"] == 0.7 and p["max_tokens"] == 16
        assert p["sample"] in (0, 1) and row["id"].endswith(f"|{p['system_variant']}|{p['sample']}")
        assert p["input_tokens"] > 0 and 0 < p["output_tokens"] <= 16
        assert p["cost_usd"] == pytest.approx((p["input_tokens"] + 2 * p["output_tokens"]) / 1e6)
        assert row["messages"][0]["content"] == ("You are terse." if p["system_variant"] == 1
                                                 else "You write correct, self-contained Python functions. "
                                                      "Reply with code in a ```python block.")
    assert {row["provenance"]["system_variant"] for row in rows} == {0, 1}
    assert summary["cost_usd"] + 1e-12 >= sum(row["provenance"]["cost_usd"] for row in rows) > 0


@pytest.mark.vllm
@pytest.mark.docker
def test_rewrites_are_checked_cached_and_reused(vllm_server, base_image, tmp_path):
    out = tmp_path / "rewrites"
    args = ["pyfunc", "--teacher", f"openai:{vllm_server}/v1:tiny", "--limit", "1", "--max-tokens", "16",
            "--rewrites", "1", "--min-reward", "0"]
    first = _collect(out, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    (rewrite,) = _lines(out / "rewrites.jsonl")
    assert rewrite["variant"] == "rewrite-1" and rewrite["problem"], "16 random tokens cannot keep `name(x)` exact"
    ledger = {line["id"].split("|", 1)[1]: line for line in _lines(out / "attempts.jsonl")}
    assert ledger["rewrite-1|0|0"]["status"] == "rejected" and ledger["rewrite-1|0|0"]["reward"] is None
    assert ledger["original|0|0"]["status"] == "kept"
    again = _collect(out, *args, "-n", "2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert _lines(out / "rewrites.jsonl") == [rewrite], "the cached rewrite is reused, not asked for again"
    assert len(_lines(out / "attempts.jsonl")) == 4


@pytest.mark.vllm
@pytest.mark.docker
def test_the_budget_stops_new_attempts(vllm_server, base_image, tmp_path):
    out = tmp_path / "budget"
    done = _collect(out, "pyfunc", "--teacher", f"openai:{vllm_server}/v1:tiny", "--limit", "3", "--max-tokens", "8",
                    "--concurrency", "1", "--min-reward", "0", "--budget-usd", "0.000001",
                    "--input-usd-per-mtok", "1000", "--output-usd-per-mtok", "1000")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["attempts"] == 1 and summary["not_started"] == 2 and summary["stopped"].startswith("budget")
    assert "not started" in done.stdout


@pytest.mark.docker
def test_a_killed_collection_resumes_without_losing_or_repeating_work(base_image, tmp_path):
    from rlaif.sandbox.gc import collect_garbage

    args = ["pyfunc", "--teacher", "reference", "--limit", "10", "--concurrency", "2"]
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    command = [sys.executable, "-m", "rlaif.cli", "collect", *args]
    reference = subprocess.Popen([*command, "--out", str(whole)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    victim = subprocess.Popen([*command, "--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not _lines(killed / "train.jsonl") and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    collect_garbage()
    with (killed / "train.jsonl").open("a") as f:
        f.write('{"id": "pyfunc/torn|orig')  # a write torn by the kill
    assert len(_lines(killed / "attempts.jsonl")) < 10, "killed mid-run"
    resumed = _collect(killed, *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert reference.wait(timeout=300) == 0
    ids = [row["id"] for row in _lines(killed / "train.jsonl")]
    ledger = [line["id"] for line in _lines(killed / "attempts.jsonl")]
    assert len(ids) == len(set(ids)) == 10 and len(ledger) == len(set(ledger)) == 10
    assert set(ids) == {row["id"] for row in _lines(whole / "train.jsonl")}


@pytest.mark.unit
def test_reopening_drops_torn_lines_and_ledgers_rows_written_before_a_kill(tmp_path):
    out = CollectionDir.open(tmp_path / "c", {"env": "pyfunc", "teacher": "reference"})
    row = {"id": "t|original|0|0", "task_id": "t", "reward": 1.0,
           "messages": [{"role": "assistant", "content": "x = 1", "tool_calls": [], "tool_call_id": ""}]}
    out.keep(row)
    (tmp_path / "c" / "train.jsonl").write_text(json.dumps(row) + "\n" + json.dumps({**row, "id": "t|original|0|1"})
                                                + "\n" + '{"id": "t|ori')
    (tmp_path / "c" / "attempts.jsonl").write_text(json.dumps(out.ledger["t|original|0|0"]) + "\n{\"id\"")
    again = CollectionDir.open(tmp_path / "c", {"env": "pyfunc", "teacher": "reference"})
    assert [line["id"] for line in _lines(tmp_path / "c" / "attempts.jsonl")] == ["t|original|0|0", "t|original|0|1"]
    assert again.ledger["t|original|0|1"]["status"] == "kept" and again.counts()["kept"] == 2
    assert len(_lines(tmp_path / "c" / "train.jsonl")) == 2 and again.kept_texts == {"t": ["x = 1", "x = 1"]}


@pytest.mark.unit
@pytest.mark.parametrize(("args", "message"), [
    (["pyfunc", "--teacher", "reference", "--rewrites", "1"], "--rewrites needs a model teacher"),
    (["pyfunc", "--teacher", "openai:no-model"], "is not openai:BASE_URL:MODEL or anthropic:MODEL"),
    (["no_such_env", "--teacher", "reference"], "unknown environment 'no_such_env'"),
])
def test_bad_input_is_one_line_and_writes_nothing(args, message, tmp_path):
    done = _collect(tmp_path / "out", *args)
    assert done.returncode != 0 and message in done.stderr
    assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.unit
def test_a_directory_of_another_teacher_is_refused(tmp_path, dying_server):
    CollectionDir.open(tmp_path / "out", {"env": "pyfunc", "teacher": "reference", "system_prompts": []})
    done = _collect(tmp_path / "out", "pyfunc", "--teacher", f"openai:{dying_server}/v1:x")
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1
    assert "collected with teacher 'reference'" in done.stderr and "pass a new --out" in done.stderr
    assert json.loads((tmp_path / "out" / "collect.json").read_text())["teacher"] == "reference"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["collect.json", "train.jsonl"]


@pytest.mark.docker
def test_an_unreachable_teacher_fails_attempts_and_stops_never_rejects(docker_engine, tmp_path, dying_server):
    out = tmp_path / "down"
    done = _collect(out, "pyfunc", "--teacher", f"openai:{dying_server}/v1:x", "--limit", "2")
    assert done.returncode != 0
    error = done.stderr.strip().splitlines()[-1]  # after the progress bar
    assert error.startswith("error: every attempt failed on infrastructure (2 of 2)") and "Connection error" in error
    assert [line["status"] for line in _lines(out / "attempts.jsonl")] == ["failed", "failed"]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["failed"], summary["rejected"], summary["kept"]) == (2, 0, 0)
