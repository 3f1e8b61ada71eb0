"""Supervised fine-tuning of the student on teacher conversations collected by `rlaif collect`, with TRL's SFTTrainer.

The loss covers assistant tokens only: their content, their tool calls and the end-of-turn token that ends each
assistant turn; system, user and tool-result tokens are context. Each conversation is rendered and tokenized here,
once, with the student's chat template (`apply_chat_template(..., return_assistant_tokens_mask=True)`, which marks
the tokens between the template's `{% generation %}` markers), and SFTTrainer receives a pre-tokenized dataset of
`input_ids` and `assistant_masks`, which it turns into labels (-100 outside the mask) while preparing the dataset;
the labels are counted against the mask before training starts.

A template without generation markers would give an all-zero mask. For such a template the mask comes from TRL's
training variant of the same template family (Qwen2.5, Qwen3, Llama 3, ...; `get_training_chat_template`, what TRL's
own `assistant_only_loss` uses); a template TRL does not know is an error, never a silent train-on-everything. The
saved tokenizer keeps the student's own template either way.

The output is a plain model directory (config.json, safetensors weights in the base model's dtype, tokenizer with its
chat template, `sft.json`), so `rlaif train` (`model.path`) and vLLM start from it. With LoRA the adapter is merged
into the base before saving and also kept in `adapter/`. The directory is built beside OUT and renamed into place
when training has finished: it appears whole or not at all.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rlaif.errors import RlaifError
from rlaif.models.modeldir import publish_model_dir, require_model_dir

ROLES = ("system", "user", "assistant", "tool")
FULL_LR, LORA_LR = 2e-5, 2e-4


@dataclass(frozen=True)
class SFTOptions:
    """How `run_sft` trains; the CLI's options, recorded in `sft.json`."""

    epochs: float = 3
    lr: float | None = None
    """Peak learning rate (linear decay to 0); None: 2e-5 for full fine-tuning, 2e-4 with LoRA. A randomly
    initialised tiny model needs far more (1e-3)."""
    batch_size: int = 4
    """Conversations per device per micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    max_length: int = 1024
    """Tokens per conversation; longer ones are cut at the end, and a row left with no assistant token is dropped."""
    lora_rank: int = 0
    """0: full fine-tuning; otherwise LoRA of this rank on every linear layer, merged into the output."""
    lora_alpha: int | None = None
    """LoRA scaling numerator; None: twice the rank."""
    seed: int = 0
    min_reward: float | None = None
    """Train only on rows whose reward is at least this; None: every row."""
    dtype: str = "auto"
    """Training precision: float32, or bfloat16 (mixed precision over float32 weights, CUDA only); auto:
    bfloat16 on a GPU that supports it, float32 otherwise. The output keeps the base model's dtype."""
    snapshot_epochs: tuple[int, ...] = ()
    """Also save the model after each of these epochs (before the last), as `OUT/epoch-N/`: the candidates of an
    early stop, chosen on a validation slice (the learning rate keeps its one schedule over all `epochs`)."""


@dataclass
class Conversation:
    """One training row: messages in chat-template form and the tool schemas offered to the model."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]


def dataset_file(dataset: str | Path) -> Path:
    """The data file of DATASET: `train.jsonl` in a directory `rlaif collect` wrote, or a .jsonl/.parquet file."""
    path = Path(dataset)
    if path.is_dir():
        path = path / "train.jsonl"
    if not path.is_file():
        raise RlaifError(f"dataset {path} does not exist; pass the directory `rlaif collect` wrote "
                         "(it holds train.jsonl) or a .jsonl/.parquet file")
    if path.suffix not in (".jsonl", ".json", ".parquet"):
        raise RlaifError(f"dataset {path} is neither .jsonl nor .parquet; pass the directory `rlaif collect` wrote")
    return path


def load_conversations(dataset: str | Path, min_reward: float | None = None) -> tuple[list[Conversation], int]:
    """The rows of DATASET as conversations, and how many rows there were before the reward filter.

    A row without messages, without an assistant turn, with an unknown role or with unreadable tools is an
    RlaifError naming the row: the dataset is broken, and training on part of it would hide that.
    """
    import datasets

    path = dataset_file(dataset)
    if path.stat().st_size == 0:  # datasets' JSON reader raises a bare StopIteration on an empty file
        raise RlaifError(f"dataset {path} has no rows; collect some with `rlaif collect`")
    try:
        table = datasets.load_dataset("parquet" if path.suffix == ".parquet" else "json", data_files=str(path),
                                      split="train")
    except Exception as err:  # datasets wraps the parser's error; its cause says what is wrong with the file
        raise RlaifError(f"cannot read dataset {path}: {err.__cause__ or err}") from err
    required = ["messages", "tools"] + (["reward"] if min_reward is not None else [])
    missing = [name for name in required if name not in table.column_names]
    if len(table) and missing:
        raise RlaifError(f"dataset {path} has no {' or '.join(repr(m) for m in missing)} field; "
                         "rows must follow the `rlaif collect` format")
    conversations = []
    for i, row in enumerate(table):
        if min_reward is not None and (row["reward"] is None or row["reward"] < min_reward):
            continue
        conversations.append(_conversation(row, f"{path} row {i + 1} (id {row.get('id')!r})"))
    if not conversations:
        kept = f" with reward >= {min_reward}" if min_reward is not None else ""
        raise RlaifError(f"dataset {path} has no rows{kept} ({len(table)} in all); "
                         + ("lower --min-reward" if kept else "collect some with `rlaif collect`"))
    return conversations, len(table)


def _conversation(row: dict[str, Any], where: str) -> Conversation:
    messages = row["messages"]
    if not messages:
        raise RlaifError(f"{where} has no messages; rows must follow the `rlaif collect` format")
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise RlaifError(f"{where} has a message whose role is not one of {', '.join(ROLES)}")
    if not any(m["role"] == "assistant" for m in messages):
        raise RlaifError(f"{where} has no assistant message, so nothing to train on; drop the row")
    if not isinstance(row["tools"], str):
        raise RlaifError(f"{where} has no 'tools' (a JSON string, \"[]\" when none); rows must follow the "
                         "`rlaif collect` format")
    try:
        tools = json.loads(row["tools"])
    except json.JSONDecodeError as err:
        raise RlaifError(f"{where}: 'tools' is not a JSON list of tool schemas ({err})") from err
    if not isinstance(tools, list):
        raise RlaifError(f"{where}: 'tools' is not a JSON list of tool schemas")
    return Conversation(messages=[_template_message(m) for m in messages], tools=tools)


def _template_message(message: dict[str, Any]) -> dict[str, Any]:
    """A dataset message as chat templates take it: only the fields its role uses."""
    out: dict[str, Any] = {"role": message["role"], "content": message.get("content") or ""}
    if message.get("tool_calls"):
        out["tool_calls"] = [{"id": call.get("id") or "", "type": "function",
                              "function": {"name": call["function"]["name"],
                                           "arguments": _arguments(call["function"].get("arguments"))}}
                             for call in message["tool_calls"]]
    if message["role"] == "tool":
        out["tool_call_id"] = message.get("tool_call_id") or ""
    return out


def _arguments(arguments: Any) -> Any:
    """Tool-call arguments as a dict: templates such as Qwen2.5's apply `tojson` to them, which would encode a JSON
    string a second time. Arguments that are not a JSON object stay as written (the call was malformed)."""
    if not isinstance(arguments, str):
        return arguments or {}
    try:
        parsed = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return arguments
    return parsed if isinstance(parsed, dict) else arguments


def masking_template(tokenizer: Any, model_dir: Path) -> str | None:
    """The chat template that marks assistant tokens: None for the tokenizer's own (it has generation markers),
    else TRL's training variant of it. RlaifError when there is none, or when the end-of-turn token falls outside
    the marked span (the model would never learn to stop)."""
    from trl.chat_template_utils import (
        get_training_chat_template,
        has_generation_markers,
        is_chat_template_stop_token_trained,
    )

    if tokenizer.chat_template is None:
        raise RlaifError(f"{model_dir} has no chat template; SFT renders every conversation with the student's own")
    template = None
    if not has_generation_markers(tokenizer.chat_template):
        try:
            template = get_training_chat_template(tokenizer)
        except ValueError as err:
            raise RlaifError(
                f"the chat template of {model_dir} has no {{% generation %}} markers, so assistant tokens cannot be "
                "told from the rest, and TRL has no training variant of it; give it one that has them with "
                f"`rlaif model template {model_dir} chatml-tools` (`smollm2-tools` for SmolLM2, or a file that wraps "
                "each assistant turn's content, tool calls and end-of-turn token in "
                "{% generation %}...{% endgeneration %})"
            ) from err
    if not is_chat_template_stop_token_trained(tokenizer, chat_template=template):
        raise RlaifError(f"the chat template of {model_dir} leaves the assistant's end-of-turn token outside "
                         "{% generation %}...{% endgeneration %}, so the model would never learn to stop; move "
                         "{% endgeneration %} after it")
    return template


def tokenize_conversation(tokenizer: Any, conversation: Conversation, max_length: int,
                          chat_template: str | None = None) -> dict[str, list[int]]:
    """`input_ids` and `assistant_masks` (1: trained on) of a conversation, cut to `max_length` tokens."""
    out = tokenizer.apply_chat_template(conversation.messages, tools=conversation.tools or None,
                                        chat_template=chat_template, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    return {"input_ids": list(out["input_ids"][:max_length]),
            "assistant_masks": list(out["assistant_masks"][:max_length])}


def run_sft(dataset: str | Path, model: str | Path, out: str | Path, options: SFTOptions = SFTOptions(),
            on_log: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Fine-tune the model directory `model` on DATASET and write the result to `out`; returns `sft.json`'s content.

    `on_log` receives TRL's log dict of every optimizer step, plus `step` and `steps` (the total). Every input is
    checked before anything is written; `out` may exist only as an empty directory.
    """
    started = time.monotonic()
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RlaifError(f"output directory {out} already exists and is not empty; pass another --out or remove it")
    model_dir = require_model_dir(model)
    if options.lora_rank < 0 or options.epochs <= 0 or options.batch_size < 1 or options.grad_accum < 1 \
            or options.max_length < 2:
        raise RlaifError("--lora-rank must be >= 0, --epochs > 0, --batch-size and --grad-accum >= 1, "
                         "--max-length >= 2")
    if options.dtype not in ("auto", "float32", "bfloat16"):
        raise RlaifError(f"--dtype {options.dtype} is not one of auto, float32, bfloat16")
    data_path = dataset_file(dataset)
    conversations, rows = load_conversations(data_path, options.min_reward)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cuda = torch.cuda.is_available()
    precision = options.dtype
    if precision == "auto":
        precision = "bfloat16" if cuda and torch.cuda.is_bf16_supported() else "float32"
    if precision == "bfloat16" and not cuda:
        raise RlaifError("--dtype bfloat16 needs a CUDA GPU; train in float32 on the CPU")

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    template = masking_template(tokenizer, model_dir)
    examples = [tokenize_conversation(tokenizer, c, options.max_length, template) for c in conversations]
    trained = [e for e in examples if any(e["assistant_masks"])]
    if not trained:
        raise RlaifError(f"no row has an assistant token within the first {options.max_length} tokens; "
                         "raise --max-length")

    lr = options.lr or (LORA_LR if options.lora_rank else FULL_LR)
    base_dtype = _config_dtype(model_dir)
    summary: dict[str, Any] = {
        "dataset": str(data_path), "rows": rows, "rows_trained": len(trained),
        "rows_below_min_reward": rows - len(conversations), "rows_cut_to_nothing": len(examples) - len(trained),
        "model": str(model_dir), "options": {**asdict(options), "lr": lr, "dtype": precision},
        "mask_template": "model" if template is None else "trl-training-variant",
        "tokens": {"assistant": sum(sum(e["assistant_masks"]) for e in trained),
                   "total": sum(len(e["input_ids"]) for e in trained)},
        "device": "cuda" if cuda else "cpu", "saved_dtype": base_dtype,
    }

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        # Master weights stay float32 (bfloat16 is autocast only): Adam's small steps would round away in bf16.
        policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        trainer = _trainer(policy, tokenizer, trained, options, lr, precision, staging / "trainer", on_log)
        if options.snapshot_epochs:
            trainer.add_callback(_snapshots(options, tokenizer, staging, base_dtype))
        in_loss = sum(sum(label != -100 for label in labels) for labels in trainer.train_dataset["labels"])
        if in_loss != summary["tokens"]["assistant"]:  # a TRL that ignores `assistant_masks` trains on everything
            raise RuntimeError(f"SFTTrainer's labels put {in_loss} tokens in the loss, the assistant mask "
                               f"{summary['tokens']['assistant']}; check how this TRL version reads `assistant_masks`")
        trainer.train()
        losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
        summary.update(steps=trainer.state.global_step, train_loss=losses[-1], train_loss_first=losses[0])
        _save(trainer.model, tokenizer, staging, base_dtype, lora=bool(options.lora_rank))
        summary["minutes"] = round((time.monotonic() - started) / 60, 2)
        (staging / "sft.json").write_text(json.dumps(summary, indent=2) + "\n")
        shutil.rmtree(staging / "trainer", ignore_errors=True)
        publish_model_dir(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary


def _config_dtype(model_dir: Path) -> str:
    config = json.loads((model_dir / "config.json").read_text())
    return config.get("dtype") or config.get("torch_dtype") or "float32"


def _trainer(policy: Any, tokenizer: Any, examples: list[dict[str, list[int]]], options: SFTOptions, lr: float,
             precision: str, work: Path, on_log: Callable[[dict[str, Any]], None] | None) -> Any:
    import datasets
    import torch
    from transformers import PrinterCallback, TrainerCallback, set_seed
    from trl import SFTConfig, SFTTrainer

    cuda = torch.cuda.is_available()
    args = SFTConfig(
        output_dir=str(work), num_train_epochs=options.epochs, learning_rate=lr,
        per_device_train_batch_size=options.batch_size, gradient_accumulation_steps=options.grad_accum,
        max_length=options.max_length, seed=options.seed, use_cpu=not cuda,
        bf16=precision == "bfloat16",  # SFTConfig's default is True, even on the CPU
        gradient_checkpointing=cuda,  # memory for speed: worth it on a GPU, not for the CPU's small models
        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
    )
    peft_config = None
    if options.lora_rank:
        from peft import LoraConfig

        peft_config = LoraConfig(r=options.lora_rank, lora_alpha=options.lora_alpha or 2 * options.lora_rank,
                                 target_modules="all-linear", task_type="CAUSAL_LM")
    set_seed(options.seed)  # before the LoRA weights are initialised inside SFTTrainer
    trainer = SFTTrainer(model=policy, args=args, processing_class=tokenizer, peft_config=peft_config,
                         train_dataset=datasets.Dataset.from_list(examples))
    trainer.remove_callback(PrinterCallback)  # it prints raw dicts; `on_log` shows progress instead
    if on_log is not None:
        class Relay(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs:
                    on_log({"step": state.global_step, "steps": state.max_steps, **logs})

        trainer.add_callback(Relay())
    return trainer


def _snapshots(options: SFTOptions, tokenizer: Any, staging: Path, dtype: str) -> Any:
    """A callback that saves a copy of the model (the one training goes on with stays as it is) after each of
    `options.snapshot_epochs`."""
    import copy

    from transformers import TrainerCallback

    wanted = {e for e in options.snapshot_epochs if 0 < e < options.epochs}

    class Snapshots(TrainerCallback):
        def on_epoch_end(self, args, state, control, model=None, **kwargs):
            epoch = round(state.epoch)
            if epoch in wanted and model is not None:
                wanted.discard(epoch)
                _save(copy.deepcopy(model), tokenizer, staging / f"epoch-{epoch}", dtype, lora=bool(options.lora_rank))

    return Snapshots()


def _save(model: Any, tokenizer: Any, directory: Path, dtype: str, lora: bool) -> None:
    """A plain model directory: LoRA merged into the base (the adapter kept in `adapter/`), weights in `dtype`."""
    import torch

    if lora:
        model.save_pretrained(directory / "adapter")
        model = model.merge_and_unload()
    model.config.use_cache = True  # training turns the KV cache off; generation wants it
    model.to(getattr(torch, dtype)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
