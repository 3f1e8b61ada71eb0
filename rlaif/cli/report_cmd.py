"""`rlaif report RUN_DIR`: a run's curve as a table, its drops, and its best and worst latest answers."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from rlaif.cli.progress import render
from rlaif.core.jsonl import read_jsonl
from rlaif.errors import RlaifError
from rlaif.types import Message, final_answer

COLUMNS = (("reward/mean", "reward", "{:.3f}"), ("reward/std", "std", "{:.3f}"), ("pass_rate", "pass", "{:.2f}"),
           ("staleness/max", "stale", "{:.0f}"), ("time/step_s", "step s", "{:.2f}"),
           ("time/train_s", "train s", "{:.2f}"), ("time/sync_s", "sync s", "{:.3f}"),
           ("tokens_per_s", "tok/s", "{:.0f}"))


def report_command(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="A directory written by `rlaif train`."),
    rows: int = typer.Option(20, help="At most this many steps in the table (evenly spaced, last included)."),
) -> None:
    """Print a run's metrics per step, the groups it dropped, and its best and worst answers of the last step."""
    metrics_path = run_dir / "metrics.jsonl"
    if not metrics_path.exists():
        raise RlaifError(f"{run_dir}: no metrics.jsonl; pass a run directory written by `rlaif train`")
    steps = read_jsonl(metrics_path, ("step",), "metrics line", "was the file edited by hand?")
    if not steps:
        raise RlaifError(f"{run_dir}: no step finished yet")
    shown = [*steps[::max(1, len(steps) // rows)][:rows - 1], steps[-1]] if len(steps) > rows else steps
    table = Table("step", *(title for _, title, _ in COLUMNS))
    for line in shown:
        table.add_row(str(line["step"]), *(fmt.format(line[key]) if line.get(key) is not None else "-"
                                           for key, _, fmt in COLUMNS))
    typer.echo(render(table))
    dropped = {k.split("/", 1)[1]: v for k, v in steps[-1].items() if k.startswith("dropped_total/")}
    typer.echo(f"dropped groups: {dropped or 'none'}")
    _answers(run_dir / "trajectories.jsonl")


def _answers(path: Path) -> None:
    scored = [t for t in read_jsonl(path) if t.get("reward") and t["reward"].get("total") is not None] \
        if path.exists() else []
    if not scored:
        return
    latest = [t for t in scored if t["weight_version"] == max(t["weight_version"] for t in scored)]
    for label, traj in (("best", max(latest, key=_total)), ("worst", min(latest, key=_total))):
        answer = final_answer([Message.model_validate(m) for m in traj["messages"]])
        typer.echo(f"{label} answer of version {traj['weight_version']} (reward {_total(traj):.3f}, "
                   f"task {traj['task_id']}): {answer[:300]!r}")


def _total(traj: dict) -> float:
    return traj["reward"]["total"]
