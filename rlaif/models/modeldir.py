"""Checks on a Hugging Face model directory, so a bad path fails early with one clear line."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from rlaif.errors import RlaifError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
TOOL_PROBE = [
    {"role": "user", "content": "list files"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c0", "type": "function", "function": {"name": "bash", "arguments": {"cmd": "ls"}}}]},
    {"role": "tool", "tool_call_id": "c0", "content": "a.py"},
]
TOOL_SPEC = [{"type": "function", "function": {
    "name": "bash", "description": "Run a shell command.",
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}}}]


def publish_model_dir(staging: Path, out: Path) -> None:
    """Make `staging` (a finished model directory next to `out`, from mkdtemp) readable by all, as a model directory
    is meant to be shared (mkdtemp and safetensors make private files), then rename it to `out`, replacing what is
    there: a reader never sees a half-written model."""
    for root, _, files in os.walk(staging):
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)
    if out.is_dir():
        shutil.rmtree(out)
    elif out.exists():
        out.unlink()
    staging.rename(out)


def require_model_dir(path: str | Path) -> Path:
    """The path, if it is a model directory; else RlaifError naming the fix."""
    path = Path(path)
    if not (path / "config.json").is_file():
        what = "does not exist" if not path.exists() else "has no config.json"
        raise RlaifError(
            f"model directory {path} {what}; build the tiny model with `rlaif model tiny --out {path}` "
            "or point model.path at a Hugging Face model directory"
        )
    return path


def chat_tokenizer(path: str | Path) -> Any:
    """The model directory's tokenizer, which must have a chat template; else RlaifError naming the fix."""
    path = require_model_dir(path)
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise RlaifError(f"model directory {path} has no tokenizer ({' or '.join(TOKENIZER_FILES)}); copy the "
                         "tokenizer files of the model it was trained from into it")
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as err:  # transformers raises many kinds here; all mean the files are unusable
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise RlaifError(f"model directory {path}: the tokenizer does not load ({first}); fix or replace its "
                         "tokenizer files") from None
    if tokenizer.chat_template is None:
        raise RlaifError(f"{path} has no chat template; rlaif renders every prompt with one, add it to the tokenizer")
    return tokenizer


def renders_tools(rendered: str) -> bool:
    """Whether a rendering of TOOL_PROBE with TOOL_SPEC shows the tool and the call's result."""
    return '"bash"' in rendered and "a.py" in rendered


def inspect_model_dir(path: str | Path) -> dict[str, Any]:
    """Architecture, sizes, and whether the chat template renders tools and tool results."""
    path = require_model_dir(path)
    config = json.loads((path / "config.json").read_text())
    tokenizer = chat_tokenizer(path)
    rendered = tokenizer.apply_chat_template(TOOL_PROBE, tools=TOOL_SPEC, tokenize=False, add_generation_prompt=True)
    hidden, heads = config.get("hidden_size"), config.get("num_attention_heads")
    return {
        "architecture": ",".join(config.get("architectures", [])),
        "vocab": len(tokenizer),
        "layers": config.get("num_hidden_layers"),
        "head_dim": config.get("head_dim") or (hidden // heads if hidden and heads else None),
        "eos": tokenizer.eos_token,
        "renders_tools": renders_tools(rendered),
    }
