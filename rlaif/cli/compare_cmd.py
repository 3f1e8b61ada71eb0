"""`rlaif compare A B`: two `rlaif eval` output directories side by side, with a paired interval of B - A."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from rlaif.cli.progress import render


def compare_command(
    a: Path = typer.Argument(..., metavar="A", help="An `rlaif eval` output directory (the baseline)."),
    b: Path = typer.Argument(..., metavar="B", help="Another, on the same tasks (the candidate)."),
    seed: int = typer.Option(0, help="Seed of the bootstrap's resampling."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """pass@1 of each with its 95% bootstrap interval over tasks, and B - A with a paired one over the tasks both
    evaluated: an interval that excludes 0 is a difference the tasks' spread cannot explain."""
    from rlaif.eval.stats import bootstrap_ci, paired_ci, read_pass_rates, show_interval

    rates = {"a": read_pass_rates(a), "b": read_pass_rates(b)}
    diff, interval, shared = paired_ci(rates["a"], rates["b"], seed=seed)
    result = {name: {"dir": str(path), "tasks": len(rates[name]),
                     "pass@1": round(sum(rates[name].values()) / len(rates[name]), 4),
                     "ci": bootstrap_ci(rates[name], seed=seed)} for name, path in (("a", a), ("b", b))}
    result["b_minus_a"] = {"tasks": shared, "diff": diff, "ci": interval}
    if as_json:
        typer.echo(json.dumps(result))
        return
    table = Table("", "evaluation", "tasks", "pass@1", "95% interval")
    for name in ("a", "b"):
        row = result[name]
        table.add_row(name.upper(), row["dir"], str(row["tasks"]), f"{row['pass@1']:.3f}", show_interval(row["ci"]))
    table.add_row("B - A", "paired over shared tasks", str(shared), f"{diff:+.3f}", show_interval(interval))
    typer.echo(render(table))
    verdict = "is above 0: B is better" if interval[0] > 0 else "is below 0: A is better" if interval[1] < 0 else \
        "contains 0: no difference the tasks can show"
    typer.echo(f"the interval of B - A {verdict}")
