"""The tiny model: deterministic, loads and generates in transformers, renders tools in its template."""

import hashlib
import subprocess
import sys

import pytest

from rlaif.errors import RlaifError
from rlaif.models.tiny import TinySpec, build_tiny_model

pytestmark = pytest.mark.unit


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_cli_builds_byte_identical_models_from_the_same_seed(tmp_path):
    for name in ("a", "b"):
        done = subprocess.run([sys.executable, "-m", "rlaif.cli", "model", "tiny", "--out", str(tmp_path / name)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    a, b = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert "model.safetensors" in a and "tokenizer.json" in a
    assert a == b
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "a").iterdir()}
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o755 and set(modes.values()) == {0o644}, modes  # shareable


def test_another_seed_gives_other_weights(tmp_path):
    build_tiny_model(tmp_path / "s0", TinySpec(seed=0))
    build_tiny_model(tmp_path / "s1", TinySpec(seed=1))
    assert _digests(tmp_path / "s0")["model.safetensors"] != _digests(tmp_path / "s1")["model.safetensors"]


def test_existing_directory_is_kept_unless_forced(tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "precious.txt").write_text("keep")
    with pytest.raises(RlaifError, match="pass --force"):
        build_tiny_model(out)
    assert (out / "precious.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"], "no half-written directory is left behind"


def test_head_dim_below_32_is_refused():
    with pytest.raises(RlaifError, match="head_dim >= 32"):
        TinySpec(hidden_size=64, num_heads=4).check()


def test_generates_in_transformers(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Write add(a, b)."}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    torch.manual_seed(0)
    out = model.generate(**prompt, max_new_tokens=12, do_sample=True)
    new = out[0, prompt["input_ids"].shape[1]:]
    assert len(new) > 0
    assert all(0 <= int(t) < len(tokenizer) for t in new)


def test_chat_template_renders_tools_calls_and_results_and_masks_assistant_turns(tiny_model):
    from transformers import AutoTokenizer

    from rlaif.models.modeldir import TOOL_PROBE, TOOL_SPEC

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    text = tokenizer.apply_chat_template(TOOL_PROBE, tools=TOOL_SPEC, tokenize=False, add_generation_prompt=True)
    assert '"name": "bash"' in text and "Run a shell command." in text
    assert '<tool_call>\n{"name": "bash", "arguments": {"cmd": "ls"}}\n</tool_call><|im_end|>' in text
    assert "<|im_start|>tool\n<tool_response>\na.py\n</tool_response><|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    out = tokenizer.apply_chat_template(TOOL_PROBE, tools=TOOL_SPEC, return_dict=True,
                                        return_assistant_tokens_mask=True)
    trained = tokenizer.decode([t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=False) if m])
    assert trained == '\n<tool_call>\n{"name": "bash", "arguments": {"cmd": "ls"}}\n</tool_call><|im_end|>'
    assert tokenizer.decode(tokenizer("<tool_call>x</tool_call>")["input_ids"], skip_special_tokens=True) == (
        "<tool_call>x</tool_call>"
    ), "tool tags must survive the decoding engines do"


def test_model_check_names_a_missing_directory(tmp_path):
    done = subprocess.run([sys.executable, "-m", "rlaif.cli", "model", "check", str(tmp_path / "none")],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: model directory {tmp_path / 'none'} does not exist; build")
