"""`rlaif sft`: TRL's SFTTrainer on collected teacher conversations trains on assistant tokens only (tool calls
included, tool results not), learns, and writes a plain model directory that transformers loads without peft."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlaif.errors import RlaifError

pytestmark = pytest.mark.unit

BASH = {"type": "function", "function": {"name": "bash", "description": "Run a shell command.", "parameters": {
    "type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}}}
ANSWER = "```python\ndef add3(x):\n    return x + 3\n```"


def message(role: str, content: str, calls: tuple = (), call_id: str = "") -> dict:
    return {"role": role, "content": content, "tool_calls": list(calls), "tool_call_id": call_id}


def row(i: int, messages: list[dict], tools: list[dict] | None = None, reward: float = 1.0) -> dict:
    """A row in the format `rlaif collect` writes."""
    return {"id": f"r{i}", "task_id": f"t{i}", "env": "pyfunc", "messages": messages, "tools": json.dumps(tools or []),
            "reward": reward, "components": {"unit_tests": reward},
            "provenance": {"teacher": "reference", "temperature": 0.0, "sample": i, "cost_usd": 0.0}}


def tool_row(i: int = 0) -> dict:
    """System, user, assistant with a tool call, the tool's result, the final assistant answer."""
    call = {"id": "c1", "type": "function", "function": {"name": "bash", "arguments": json.dumps({"cmd": "cat a.py"})}}
    return row(i, [message("system", "Fix the failing test."), message("user", "test_a fails"),
                   message("assistant", "Let me read it.", (call,)),
                   message("tool", "def f():\n    return 2", call_id="c1"),
                   message("assistant", "The bug is in f.")], tools=[BASH])


def add3_rows(n: int = 16) -> list[dict]:
    return [row(i, [message("user", f"Write add3: add 3 to x. ({i})"), message("assistant", ANSWER)]) for i in range(n)]


def write_dataset(directory: Path, rows: list[dict]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return directory


def masked_spans(tokenizer, example: dict) -> tuple[list[str], str]:
    """The decoded runs of trained-on tokens, and the decoded rest."""
    spans, current, rest = [], [], []
    for token, trained in zip(example["input_ids"], example["assistant_masks"], strict=True):
        if trained:
            current.append(token)
        else:
            rest.append(token)
            if current:
                spans.append(current)
                current = []
    if current:
        spans.append(current)
    return [tokenizer.decode(s) for s in spans], tokenizer.decode(rest)


def rlaif(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlaif.cli", *args], capture_output=True, text=True, timeout=300)


def test_only_assistant_tokens_and_their_tool_calls_are_trained_on(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    from rlaif.distill.sft import load_conversations, masking_template, tokenize_conversation

    conversations, _ = load_conversations(write_dataset(tmp_path / "data", [tool_row()]))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    assert masking_template(tokenizer, tiny_model) is None  # the tiny template has its own generation markers
    spans, rest = masked_spans(tokenizer, tokenize_conversation(tokenizer, conversations[0], max_length=1024))
    assert spans == ['Let me read it.\n<tool_call>\n{"name": "bash", "arguments": {"cmd": "cat a.py"}}\n</tool_call>'
                     '<|im_end|>', "The bug is in f.<|im_end|>"]
    for context in ("Fix the failing test.", "test_a fails", '"description": "Run a shell command."',
                    "<tool_response>\ndef f():\n    return 2\n</tool_response>"):
        assert context in rest


def test_a_template_without_markers_masks_with_trls_training_variant(tiny_model, tmp_path):
    """Real students (Qwen2.5 here, TRL's copy of its template) ship no generation markers."""
    from transformers import AutoTokenizer
    from trl.chat_template_utils import qwen2_5_chat_template

    from rlaif.distill.sft import load_conversations, masking_template, tokenize_conversation

    conversations, _ = load_conversations(write_dataset(tmp_path / "data", [tool_row()]))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.chat_template = qwen2_5_chat_template
    template = masking_template(tokenizer, tiny_model)
    assert template is not None
    example = tokenize_conversation(tokenizer, conversations[0], max_length=1024, chat_template=template)
    assert example["input_ids"] == tokenizer.apply_chat_template(conversations[0].messages, tools=[BASH])["input_ids"]
    spans, rest = masked_spans(tokenizer, example)
    assert [s.strip() for s in spans] == [
        'Let me read it.\n<tool_call>\n{"name": "bash", "arguments": {"cmd": "cat a.py"}}\n</tool_call><|im_end|>',
        "The bug is in f.<|im_end|>"]
    assert "Fix the failing test." in rest and "def f():\n    return 2" in rest


@pytest.mark.parametrize(("template", "problem"), [
    ("{% for m in messages %}{{ m.role }}: {{ m.content }}<|im_end|>\n{% endfor %}", "no {% generation %} markers"),
    ("{% for m in messages %}{{ m.role }}: {% if m.role == 'assistant' %}{% generation %}{{ m.content }}"
     "{% endgeneration %}{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}", "never learn to stop"),
], ids=["no markers", "end of turn outside the markers"])
def test_a_template_that_cannot_mask_the_assistant_is_an_error(tiny_model, template, problem):
    from transformers import AutoTokenizer

    from rlaif.distill.sft import masking_template

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.chat_template = template
    with pytest.raises(RlaifError, match=problem) as err:
        masking_template(tokenizer, tiny_model)
    assert "\n" not in str(err.value)


def test_sft_cli_learns_the_answers_and_writes_a_model_directory(tiny_model, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlaif.models.modeldir import inspect_model_dir

    data, out = write_dataset(tmp_path / "data", [*add3_rows(), tool_row(16)]), tmp_path / "sft"
    done = rlaif("sft", str(data), "--model", str(tiny_model), "--out", str(out), "--lr", "3e-3", "--epochs", "6",
                 "--batch-size", "2", "--max-length", "128")
    assert done.returncode == 0, done.stderr
    assert f"model.path: {out}" in done.stdout.splitlines()[-1]
    summary = json.loads((out / "sft.json").read_text())
    # The tool row's system turn (tool schemas) fills the 128 tokens before its first assistant token: dropped.
    assert (summary["rows"], summary["rows_trained"], summary["rows_cut_to_nothing"]) == (17, 16, 1)
    assert summary["steps"] == 48
    tokenizer = AutoTokenizer.from_pretrained(out)
    # Checked inside run_sft against the labels SFTTrainer built: exactly the answers and their end-of-turn tokens.
    assert summary["tokens"]["assistant"] == 16 * len(tokenizer(ANSWER + "<|im_end|>")["input_ids"])
    assert summary["tokens"]["total"] > 2 * summary["tokens"]["assistant"]
    # Measured: 6.83 at the first step (about ln(vocab) for the random tiny model), 0.05 at the last.
    assert summary["train_loss"] < summary["train_loss_first"] / 10
    assert sorted(p.name for p in out.iterdir()) == ["chat_template.jinja", "config.json", "generation_config.json",
                                                    "model.safetensors", "sft.json", "tokenizer.json",
                                                    "tokenizer_config.json"]
    assert list(tmp_path.glob(".sft.*")) == []  # the staging directory was renamed into place
    assert inspect_model_dir(out)["renders_tools"]

    model = AutoModelForCausalLM.from_pretrained(out)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Write add3: add 3 to x. (99)"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        generated = model.generate(**prompt, max_new_tokens=32, do_sample=False)
    assert tokenizer.decode(generated[0, prompt["input_ids"].shape[1]:]) == ANSWER + "<|im_end|>"


def test_lora_output_is_the_merged_plain_model_and_keeps_the_adapter(tiny_model, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from rlaif.distill.sft import SFTOptions, run_sft

    out = tmp_path / "lora"
    summary = run_sft(write_dataset(tmp_path / "data", add3_rows(8)), tiny_model, out,
                      SFTOptions(epochs=1, lora_rank=8, max_length=128))
    assert summary["options"]["lr"] == 2e-4 and summary["steps"] == 2
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert not (out / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in name for name in merged.state_dict())
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged.state_dict()[name], base.state_dict()[name])
    ids = torch.tensor([[1, 5, 9, 200, 31]])
    with torch.no_grad():
        unmerged = PeftModel.from_pretrained(base, out / "adapter")(ids).logits
        assert torch.allclose(merged(ids).logits, unmerged, atol=1e-5)


def test_snapshots_are_the_model_after_their_epoch_and_leave_training_as_it_was(tiny_model, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from rlaif.distill.sft import SFTOptions, run_sft

    data = write_dataset(tmp_path / "data", add3_rows(8))
    options = {"epochs": 2, "lr": 3e-3, "batch_size": 4, "max_length": 128}
    snapped = run_sft(data, tiny_model, tmp_path / "snapped", SFTOptions(**options, snapshot_epochs=(1, 5)))
    plain = run_sft(data, tiny_model, tmp_path / "plain", SFTOptions(**options))
    assert sorted(p.name for p in (tmp_path / "snapped").glob("epoch-*")) == ["epoch-1"], "5 is past the last epoch"
    name = "model.layers.0.self_attn.q_proj.weight"
    weights = {d: AutoModelForCausalLM.from_pretrained(tmp_path / d).state_dict()[name]
               for d in ("snapped", "plain", "snapped/epoch-1")}
    assert torch.equal(weights["snapped"], weights["plain"]), "saving a snapshot must not disturb training"
    assert snapped["train_loss"] == plain["train_loss"]
    assert not torch.equal(weights["snapped/epoch-1"], weights["plain"])
    base = AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()[name]
    assert not torch.equal(weights["snapped/epoch-1"], base), "after one epoch of two, trained but not finished"


@pytest.mark.parametrize(("case", "says"), [
    ("missing dataset", "nowhere does not exist"), ("empty file", "has no rows;"),
    ("malformed line", "cannot read dataset"), ("no row above --min-reward", "lower --min-reward"),
    ("row without messages", "row 2 (id 'r1') has no messages"),
    ("row without tools", "row 2 (id 'r1') has no 'tools'"),
    ("missing model", "no-model does not exist"), ("not a model dir", "has no config.json"),
    ("out not empty", "is not empty"),
])
def test_bad_input_is_one_error_line_and_writes_nothing(tiny_model, tmp_path, case, says):
    data, model, out, extra = tmp_path / "data", tiny_model, tmp_path / "out", []
    rows = add3_rows(2)
    if case == "empty file":
        rows = []
    elif case == "no row above --min-reward":
        extra = ["--min-reward", "1.5"]
    elif case == "row without messages":
        del rows[1]["messages"]
    elif case == "row without tools":
        del rows[1]["tools"]
    elif case == "missing model":
        model = tmp_path / "no-model"
    elif case == "not a model dir":
        model = tmp_path
    elif case == "out not empty":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    write_dataset(data, rows)
    if case == "malformed line":
        (data / "train.jsonl").write_text('{"id": "r0", "messages": [\n')
    elif case == "missing dataset":
        data = tmp_path / "nowhere"
    done = rlaif("sft", str(data), "--model", str(model), "--out", str(out), *extra)
    lines = done.stderr.splitlines()
    assert done.returncode != 0 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert says in lines[0]
    if case == "out not empty":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
    else:
        assert not out.exists()
    assert list(tmp_path.glob(".out.*")) == []
