"""Build a tiny Qwen2-architecture causal LM, deterministically from a seed, with nothing downloaded.

The model is random-initialised; it exists so that every real part (transformers, TRL, vLLM) can be
exercised on a machine with no GPU and no network. The tokenizer is a byte-level BPE trained on a
synthetic corpus of small Python functions and chat phrases generated from the seed, so it encodes
any text and is compact on code. Same seed and sizes -> byte-identical files.

Sizes: head_dim = hidden / heads must be >= 32, because vLLM's CPU attention rejects 16.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from rlaif.errors import RlaifError
from rlaif.models.modeldir import publish_model_dir
from rlaif.models.templates import chatml_tools

IM_START, IM_END, PAD = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
TOOL_TAGS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]
STAMP = "rlaif-tiny.json"



@dataclass(frozen=True)
class TinySpec:
    """The sizes of a tiny model; recorded in the output directory as `rlaif-tiny.json`."""

    seed: int = 0
    vocab_size: int = 2048
    """An upper bound: BPE stops early when the corpus offers no more merges (about 870 at seed 0)."""
    hidden_size: int = 128
    intermediate_size: int = 512
    num_layers: int = 2
    num_heads: int = 2
    max_positions: int = 4096

    def check(self) -> None:
        if self.hidden_size % self.num_heads or self.hidden_size // self.num_heads < 32:
            raise RlaifError(
                f"hidden size {self.hidden_size} / {self.num_heads} heads must be a whole head_dim >= 32 "
                "(vLLM's CPU attention rejects smaller heads); raise --hidden or lower --heads"
            )
        if self.vocab_size < 512:
            raise RlaifError(f"vocab size {self.vocab_size} is too small; use at least 512")


def build_tiny_model(out: Path, spec: TinySpec = TinySpec(), force: bool = False) -> bool:
    """Write a tiny model to `out`. Returns False when `out` already holds this exact spec.

    The directory appears whole or not at all: it is built beside `out` and renamed into place.
    """
    spec.check()
    out = Path(out)
    if out.exists():
        stamp = out / STAMP
        if stamp.is_file() and json.loads(stamp.read_text()) == asdict(spec) and not force:
            return False
        if not force:
            raise RlaifError(f"{out} already exists and is not a tiny model of this spec; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tokenizer = _train_tokenizer(spec)
        tokenizer.save_pretrained(work)
        _init_model(spec, tokenizer).save_pretrained(work, safe_serialization=True)
        (work / STAMP).write_text(json.dumps(asdict(spec), indent=2) + "\n")
        publish_model_dir(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return True


def _corpus(seed: int, lines: int = 6000) -> list[str]:
    """Synthetic training text: small Python functions, tool calls and chat phrases."""
    rng = random.Random(seed)
    names = ["x", "y", "n", "s", "a", "b", "items", "text", "value", "count", "result", "i", "k"]
    ops = ["+", "-", "*", "//", "%", "==", "!=", "<", ">", "<=", ">=", "and", "or", "in"]
    funcs = ["add", "sub", "mul", "is_even", "reverse", "count_vowels", "max_of", "sum_list", "upper", "clamp"]
    words = [
        "the", "a", "of", "to", "and", "in", "is", "it", "that", "for", "you", "with", "on", "as", "this", "be",
        "are", "or", "by", "from", "at", "not", "function", "return", "value", "list", "string", "number",
        "test", "answer", "write", "code", "python", "call", "tool", "file", "read", "error", "fix", "bug",
        "should", "takes", "returns", "given", "example", "input", "output", "please", "solve", "task", "step",
        "result", "check", "pass", "fail"
    ]
    out: list[str] = []
    for _ in range(lines):
        kind = rng.randrange(6)
        f, a, b = rng.choice(funcs), rng.choice(names), rng.choice(names)
        if kind == 0:
            out.append(f"def {f}({a}, {b}):\n    return {a} {rng.choice(ops)} {b}\n")
        elif kind == 1:
            loop = f"    for i in range(len({a})):\n        {b} += {a}[i]\n"
            out.append(f"def {f}({a}):\n    {b} = 0\n{loop}    return {b}\n")
        elif kind == 2:
            out.append(f"assert {f}({rng.randrange(100)}, {rng.randrange(100)}) == {rng.randrange(200)}\n")
        elif kind == 3:
            args = json.dumps({"path": f"{rng.choice(names)}.py"})
            out.append(f'<tool_call>\n{{"name": "read_file", "arguments": {args}}}\n</tool_call>\n')
        elif kind == 4:
            out.append(" ".join(rng.choice(words) for _ in range(rng.randrange(4, 16))).capitalize() + ".\n")
        else:
            out.append(f"```python\nif {a} {rng.choice(ops)} {b}:\n    print({a!r}, {b})\n```\n")
    return out


def _train_tokenizer(spec: TinySpec):  # -> PreTrainedTokenizerFast; imported lazily (transformers is slow)
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size - len(TOOL_TAGS),
        special_tokens=[PAD, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(_corpus(spec.seed), trainer)
    # Tool tags are ordinary (non-special) added tokens: engines decode with skip_special_tokens,
    # and the tags must survive decoding for tool calls to be parsed.
    raw.add_tokens([AddedToken(t, special=False, normalized=False) for t in TOOL_TAGS])
    return PreTrainedTokenizerFast(
        tokenizer_object=raw,
        eos_token=IM_END,
        pad_token=PAD,
        chat_template=chatml_tools(),
        model_max_length=spec.max_positions,
    )


def _init_model(spec: TinySpec, tokenizer):  # -> Qwen2ForCausalLM
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        max_position_embeddings=spec.max_positions,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(spec.seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=True
    )
    return model
