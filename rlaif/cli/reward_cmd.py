"""`rlaif reward serve`: the reward service over HTTP, for grading outside the training cluster."""

from __future__ import annotations

import os
from pathlib import Path

import typer

app = typer.Typer(help="Serve rewards over HTTP.", no_args_is_help=True)


@app.command("serve")
def serve(
    config: Path = typer.Argument(..., help="Config file: env, sandbox and reward sections are used."),
    overrides: list[str] = typer.Argument(None, help="Overrides as a.b.c=value."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; anything but loopback exposes the service."),
    port: int = typer.Option(8765, help="Port."),
) -> None:
    """Grade submissions for the config's environment at POST /v1/grade (token from RLAIF_REWARD_TOKEN)."""
    from aiohttp import web

    from rlaif.core.config import load_config
    from rlaif_rewards.http_front import TOKEN_ENV, make_app
    from rlaif_rewards.service import Rewarder

    app_ = make_app(Rewarder(load_config(config, overrides or []), run_id="reward-http"), os.environ.get(TOKEN_ENV, ""))
    typer.echo(f"reward service for {config} on http://{host}:{port} (POST /v1/grade)", err=True)
    web.run_app(app_, host=host, port=port, print=None)
