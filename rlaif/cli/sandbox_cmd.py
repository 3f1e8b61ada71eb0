"""`rlaif sandbox`: build sandbox images."""

from __future__ import annotations

import typer

app = typer.Typer(help="Build and run sandboxes.", no_args_is_help=True)


@app.command("build")
def build() -> None:
    """Build the base sandbox image from Debian packages (no registry); skipped when up to date."""
    from rlaif.sandbox.images import build_base_image

    typer.echo(build_base_image(log=lambda line: typer.echo(line, err=True)))
