"""`rlaif config`: inspect the resolved config."""

from __future__ import annotations

from pathlib import Path

import typer

from rlaif.core.config import Config, dump_config, load_config

app = typer.Typer(help="Inspect configs.", no_args_is_help=True)


@app.command("show")
def show(
    file: Path = typer.Argument(..., help="YAML config file."),
    overrides: list[str] = typer.Argument(None, help="Overrides as a.b.c=value."),
    doc: bool = typer.Option(False, "--doc", help="Print every field's documentation instead."),
) -> None:
    """Print the config after overrides and validation, as YAML."""
    if doc:
        typer.echo(describe(Config))
        return
    typer.echo(dump_config(load_config(file, overrides or [])), nl=False)


def describe(model: type, prefix: str = "") -> str:
    """Every field of a config section, dotted, with its type, default and docstring."""
    lines = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        sub = field.annotation
        if isinstance(sub, type) and hasattr(sub, "model_fields"):
            lines.append(f"{key}: {field.description or ''}")
            lines.append(describe(sub, f"{key}."))
        else:
            default = "required" if field.is_required() else f"default {field.get_default(call_default_factory=True)!r}"
            lines.append(f"{key} ({default}): {field.description or ''}")
    return "\n".join(lines)
