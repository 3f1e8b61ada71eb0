"""`rlaif sft DATASET --model DIR`: supervised fine-tuning on collected teacher conversations (TRL's SFTTrainer)."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.progress import TextColumn

from rlaif.cli.progress import make_bar


def sft_command(
    dataset: Path = typer.Argument(..., metavar="DATASET",
                                   help="A directory `rlaif collect` wrote (its train.jsonl), or a .jsonl/.parquet."),
    model: Path = typer.Option(..., "--model", help="The student: a Hugging Face model directory."),
    out: Path = typer.Option(None, "--out", help="Output model directory (default runs/sft-<time>)."),
    epochs: float = typer.Option(3, help="Passes over the dataset."),
    lr: float = typer.Option(None, help="Peak learning rate (default 2e-5, with LoRA 2e-4; a tiny model wants 1e-3)."),
    batch_size: int = typer.Option(4, help="Conversations per micro-batch."),
    grad_accum: int = typer.Option(1, help="Micro-batches per optimizer step."),
    max_length: int = typer.Option(1024, help="Tokens per conversation; the rest is cut."),
    lora_rank: int = typer.Option(0, help="LoRA rank (0: full fine-tuning); the adapter is merged into the output."),
    lora_alpha: int = typer.Option(None, help="LoRA alpha (default twice the rank)."),
    seed: int = typer.Option(0, help="Seed for data order and LoRA initialisation."),
    min_reward: float = typer.Option(None, help="Train only on rows with at least this reward."),
    dtype: str = typer.Option("auto", help="float32 or bfloat16 (mixed precision, GPU only); auto: bfloat16 on a "
                                           "GPU that supports it, else float32."),
    snapshots: str = typer.Option("", "--snapshot-epochs", metavar="N,N,...",
                                  help="Also save the model after these epochs, as OUT/epoch-N (early stops)."),
) -> None:
    """Fine-tune the student on teacher conversations, assistant tokens only; writes a plain model directory.

    A preflight checks the student (its chat template renders) and that the output folder takes its weights first."""
    from rlaif.cli.preflight import sft_preflight

    out = out or Path("runs") / f"sft-{time.strftime('%Y%m%d-%H%M%S')}"
    snapshot_epochs = _epochs(snapshots)
    sft_preflight(model, out)
    import datasets
    import huggingface_hub

    from rlaif.distill.sft import SFTOptions, run_sft

    # Bars for each dataset stage and each weights file would drown the training bar; transformers reads the
    # hub's switch when it is imported.
    datasets.disable_progress_bars()
    huggingface_hub.utils.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # a file it cannot parse is our one-line error
    options = SFTOptions(epochs=epochs, lr=lr, batch_size=batch_size, grad_accum=grad_accum, max_length=max_length,
                         lora_rank=lora_rank, lora_alpha=lora_alpha, seed=seed, min_reward=min_reward, dtype=dtype,
                         snapshot_epochs=snapshot_epochs)
    # Started at the first step, so that an input error is the only line on stderr.
    bar = make_bar(TextColumn("{task.fields[status]}"))
    task = bar.add_task(f"sft {model.name}", total=None, status="", start=False)

    def on_log(logs: dict) -> None:
        if not bar.live.is_started:
            bar.start()
            bar.start_task(task)
        status = f"epoch {logs['epoch']:.2f}  loss {logs['loss']:.4f}  lr {logs['learning_rate']:.2e}"
        bar.update(task, completed=logs["step"], total=logs["steps"], status=status)

    try:
        summary = run_sft(dataset, model, out, options, on_log=on_log)
    finally:
        if bar.live.is_started:  # stopping a bar that never started still prints an empty line
            bar.stop()
    tokens = summary["tokens"]
    typer.echo(f"trained {summary['rows_trained']} conversations ({tokens['assistant']} of {tokens['total']} tokens "
               f"in the loss), {summary['steps']} steps, loss {summary['train_loss_first']:.4f} -> "
               f"{summary['train_loss']:.4f}, {summary['minutes']} min")
    typer.echo(f"model in {out}: start RL from it with `model.path: {out}` in a train config "
               f"(or `rlaif train CONFIG model.path={out}`)")


def _epochs(text: str) -> tuple[int, ...]:
    from rlaif.errors import RlaifError

    try:
        epochs = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise RlaifError(f"--snapshot-epochs {text!r} is not a comma-separated list of whole epochs (e.g. 20,40)") \
            from None
    if any(e < 1 for e in epochs):
        raise RlaifError(f"--snapshot-epochs {text!r}: epochs start at 1")
    return epochs
