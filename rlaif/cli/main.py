"""`rlaif`: the entry point. Commands live in one module per group; heavy imports stay inside them."""

from __future__ import annotations

import sys

import typer

from rlaif.cli import (
    collect_cmd,
    compare_cmd,
    config_cmd,
    env_cmd,
    eval_cmd,
    judge_cmd,
    launch_cmd,
    model_cmd,
    quickstart_cmd,
    report_cmd,
    reward_cmd,
    sandbox_cmd,
    sft_cmd,
    train_cmd,
)
from rlaif.errors import RlaifError

app = typer.Typer(
    name="rlaif",
    help="RL fine-tuning of LLMs with LLM-as-judge rewards.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # rich tracebacks print locals, and locals can hold API keys
)
app.add_typer(config_cmd.app, name="config")
app.add_typer(model_cmd.app, name="model")
app.add_typer(sandbox_cmd.app, name="sandbox")
app.add_typer(env_cmd.app, name="env")
app.add_typer(judge_cmd.app, name="judge")
app.add_typer(reward_cmd.app, name="reward")
app.command("eval")(eval_cmd.eval_command)
app.command("collect")(collect_cmd.collect_command)
app.command("compare")(compare_cmd.compare_command)
app.command("sft")(sft_cmd.sft_command)
app.command("train")(train_cmd.train_command)
app.command("report")(report_cmd.report_command)
app.command("quickstart")(quickstart_cmd.quickstart_command)
app.command("launch")(launch_cmd.launch_command)

def main() -> None:
    """Run the CLI; a user-facing error becomes one line on stderr and a non-zero exit."""
    try:
        app()
    except RlaifError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
