"""`rlaif report RUN_DIR`: a run's curve as a table, its drops, and its best and worst latest answers; and the
whole run as `RUN_DIR/report.html` (curves, trajectory browser), opened or served with `--open` / `--serve`."""

from __future__ import annotations

import webbrowser
from pathlib import Path

import typer
from rich.table import Table

from rlaif.cli.progress import render
from rlaif.core.jsonl import read_jsonl
from rlaif.errors import RlaifError
from rlaif.report import ReportServer, write_report
from rlaif.report.data import read_rows
from rlaif.types import Message, final_answer

COLUMNS = (("reward/mean", "reward", "{:.3f}"), ("reward/std", "std", "{:.3f}"), ("pass_rate", "pass", "{:.2f}"),
           ("staleness/max", "stale", "{:.0f}"), ("time/step_s", "step s", "{:.2f}"),
           ("time/train_s", "train s", "{:.2f}"), ("time/sync_s", "sync s", "{:.3f}"),
           ("tokens_per_s", "tok/s", "{:.0f}"))


def report_command(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR",
                                   help="A directory written by `rlaif train`, `rlaif eval` or `rlaif collect`."),
    rows: int = typer.Option(20, help="At most this many steps in the table (evenly spaced, last included)."),
    open_page: bool = typer.Option(False, "--open", help="Open report.html in the web browser."),
    serve: bool = typer.Option(False, "--serve", help="Serve the report on 127.0.0.1, regenerated (and reloaded in "
                               "the browser) as the run's files change; Ctrl-C stops."),
    port: int = typer.Option(8765, help="Port of --serve (0: any free one)."),
) -> None:
    """Print a run's metrics per step, the groups it dropped, and its best and worst answers of the last step;
    write RUN_DIR/report.html."""
    metrics_path = run_dir / "metrics.jsonl"
    if metrics_path.exists():
        _table(metrics_path, rows, allow_empty=serve)
        _answers(run_dir / "trajectories.jsonl")
    elif not any((run_dir / name).exists() for name in ("trajectories.jsonl", "train.jsonl", "attempts.jsonl")):
        raise RlaifError(f"{run_dir}: no metrics.jsonl or trajectories.jsonl; pass a directory written by "
                         "`rlaif train`, `rlaif eval` or `rlaif collect`")
    page = write_report(run_dir)
    typer.echo(f"report: {page}")
    if serve:
        server = ReportServer(run_dir, port)
        typer.echo(f"serving the report at {server.url} (127.0.0.1 only; Ctrl-C stops)")
        if open_page:
            webbrowser.open(server.url)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    elif open_page:
        webbrowser.open(page.resolve().as_uri())


def _table(metrics_path: Path, rows: int, allow_empty: bool) -> None:
    steps = read_jsonl(metrics_path, ("step",), "metrics line", "was the file edited by hand?")
    if not steps:
        if allow_empty:
            return
        raise RlaifError(f"{metrics_path.parent}: no step finished yet")
    shown = [*steps[::max(1, len(steps) // rows)][:rows - 1], steps[-1]] if len(steps) > rows else steps
    table = Table("step", *(title for _, title, _ in COLUMNS))
    for line in shown:
        table.add_row(str(line["step"]), *(fmt.format(line[key]) if line.get(key) is not None else "-"
                                           for key, _, fmt in COLUMNS))
    typer.echo(render(table))
    dropped = {k.split("/", 1)[1]: v for k, v in steps[-1].items() if k.startswith("dropped_total/")}
    typer.echo(f"dropped groups: {dropped or 'none'}")


def _answers(path: Path) -> None:
    """The best and worst answer of the newest weight version; a live run's line still being written is skipped."""
    scored = [t for t in read_rows(path) if t.get("reward") and t["reward"].get("total") is not None]
    if not scored:
        return
    latest = [t for t in scored if t["weight_version"] == max(t["weight_version"] for t in scored)]
    for label, traj in (("best", max(latest, key=_total)), ("worst", min(latest, key=_total))):
        answer = final_answer([Message.model_validate(m) for m in traj["messages"]])
        typer.echo(f"{label} answer of version {traj['weight_version']} (reward {_total(traj):.3f}, "
                   f"task {traj['task_id']}): {answer[:300]!r}")


def _total(traj: dict) -> float:
    return traj["reward"]["total"]
