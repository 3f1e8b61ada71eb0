"""`rlaif judge score|check|calibrate`: re-score stored answers with any judge; measure a judge with canaries, or
against the truth of unit tests."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import typer
from rich.table import Table

from rlaif.cli.progress import progress_bar, render
from rlaif.core.jsonl import read_jsonl
from rlaif.errors import RlaifError

app = typer.Typer(help="Score answers with a judge; check it with canaries, or calibrate it against unit tests.",
                  no_args_is_help=True)


def load_judge(config_path: Path, name: str | None):
    """The named (or first) judge of a config file's `reward.judges`; the file needs no `model` section."""
    from rlaif.core.config import load_reward_config
    from rlaif_rewards.judge import Judge

    judges = load_reward_config(config_path).judges if config_path else []
    chosen = [j for j in judges if name is None or j.name == name]
    if not chosen:
        raise RlaifError(f"{config_path} defines no judge{f' named {name!r}' if name else ''}; add one under "
                         "reward.judges (e.g. - {endpoint: anthropic:claude-sonnet-4-5})")
    return Judge(chosen[0])


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise RlaifError(f"input {path} does not exist; pass a JSONL file of {{id, prompt, completion}} rows")
    return read_jsonl(path, ("id", "prompt", "completion"), "row",
                      "rows need id, prompt, completion (reference and group are optional)")


@app.command("score")
def score(
    config: Path = typer.Option(..., "--config", help="Config file with reward.judges."),
    input_path: Path = typer.Option(..., "--input", help="JSONL rows: id, prompt, completion, reference?, group?"),
    output: Path = typer.Option(..., "--output", help="JSONL rows out: id, score (or null), status, reason, usage."),
    judge_name: str = typer.Option(None, "--judge", help="Which judge of the config (default: the first)."),
) -> None:
    """Re-score stored answers with a judge. Resumable: ids already in the output are skipped."""
    from rlaif.types import Task
    from rlaif_rewards.rubric import Rubric

    rows = read_rows(input_path)
    lines = output.read_text().splitlines() if output.exists() else []
    done = {json.loads(line)["id"] for line in lines if line.strip()}
    todo = [r for r in rows if r["id"] not in done]
    judge = load_judge(config, judge_name)
    rubric = Rubric.from_file(judge.config.rubric) if judge.config.rubric else None
    groups: dict[str, list[dict]] = {}
    for row in todo:
        key = str(row["group"]) if judge.config.mode == "group" and row.get("group") is not None else f"\0{row['id']}"
        groups.setdefault(key, []).append(row)

    async def run() -> None:
        with output.open("a") as sink, progress_bar("judging", len(todo)) as advance:
            def write(row: dict, result) -> None:
                sink.write(json.dumps({"id": row["id"], "score": result.total, "status": result.status,
                                       "reason": result.details.get("reason") or result.details.get("error")
                                       or result.details.get("short_circuit", ""),
                                       "usage": result.details.get("usage", {})}) + "\n")
                sink.flush()
                advance()

            async def one(members: list[dict]) -> None:
                first = members[0]
                task = Task(id=str(first["id"]), env="judge", prompt=first["prompt"], reference=first.get("reference"))
                if len(members) > 1:
                    results = await judge.score_group(task, [m["completion"] for m in members], rubric,
                                                      first.get("reference"))
                else:
                    results = [await judge.score(task, first["completion"], rubric, first.get("reference"))]
                for member, result in zip(members, results, strict=True):
                    write(member, result)

            try:
                await asyncio.gather(*(one(members) for members in groups.values()))
            finally:
                await judge.close()

    asyncio.run(run())
    typer.echo(f"scored {len(todo)} rows ({len(done)} already done) into {output}; judge calls {judge.stats['calls']}, "
               f"cache hits {judge.stats['cache_hits']}, failed {judge.stats['failed']}, "
               f"cost ${judge.usage['cost_usd']:.4f}")


@app.command("check")
def check(
    config: Path = typer.Option(..., "--config", help="Config file with reward.judges."),
    judge_name: str = typer.Option(None, "--judge", help="Which judge of the config (default: the first)."),
    limit: int = typer.Option(10, help="Canary tasks (from judged_qa) to use."),
    threshold: float = typer.Option(0.5, help="A score at or above this counts as a pass."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Known-good answers must pass, known-bad ones must not; prints the pass rate per canary. Exit 1 on any miss."""
    from rlaif.registry import load_environment
    from rlaif_rewards.canaries import canaries
    from rlaif_rewards.rubric import Rubric

    env = load_environment("judged_qa")
    tasks = (env.tasks("train") + env.tasks("test"))[:limit]
    judge = load_judge(config, judge_name)

    async def run() -> dict[str, list]:
        outcomes: dict[str, list] = {}
        with progress_bar("canaries", len(tasks) * 6) as advance:
            async def one(task, name: str, answer: str) -> None:
                result = await judge.score(task, answer, Rubric.model_validate(task.data["rubric"]), task.reference)
                outcomes.setdefault(name, []).append(result)
                advance()

            try:
                await asyncio.gather(*(one(t, n, a) for t in tasks for n, a in canaries(t).items()))
            finally:
                await judge.close()
        return outcomes

    outcomes = asyncio.run(run())
    report = {"judge": judge.provider.name, "tasks": len(tasks), "threshold": threshold, "canaries": {}}
    misses = 0
    for name, results in outcomes.items():
        scored = [r.total for r in results if r.total is not None]
        passed = sum(s >= threshold for s in scored)
        rate = passed / len(scored) if scored else None
        errors = Counter(str(r.details.get("error")) for r in results if r.total is None)
        report["canaries"][name] = {"pass_rate" if name == "reference" else "false_pass_rate": rate,
                                    "scored": len(scored), "failed_verdicts": len(results) - len(scored),
                                    "errors": dict(errors.most_common())}
        misses += (len(scored) - passed if name == "reference" else passed) + len(results) - len(scored)
    if as_json:
        typer.echo(json.dumps(report))
    else:
        table = Table("canary", "should", "rate", "scored", "failed verdicts")
        for name, row in report["canaries"].items():
            rate = row.get("pass_rate", row.get("false_pass_rate"))
            table.add_row(name, "pass" if name == "reference" else "fail", "-" if rate is None else f"{rate:.2f}",
                          str(row["scored"]), str(row["failed_verdicts"]))
        typer.echo(render(table))
        failures = sum((Counter(row["errors"]) for row in report["canaries"].values()), Counter())
        for error, count in failures.most_common():
            typer.echo(f"{count} failed verdict{'s' * (count != 1)}: {error}", err=True)
    raise typer.Exit(1 if misses else 0)


@app.command("calibrate")
def calibrate(
    config: Path = typer.Argument(..., metavar="CONFIG", help="Config file with reward.judges (and sandbox)."),
    env_name: str = typer.Option(..., "--env", help="pyfunc or repo_repair: whose unit tests give the truth."),
    run_dir: Path = typer.Option(None, "--from", help="Also judge the policy samples of this run's trajectories."),
    judge_name: str = typer.Option(None, "--judge", help="Which judge of the config (default: the first)."),
    limit: int = typer.Option(10, min=1, help="Tasks to build answers from; also the most samples read."),
    out: Path = typer.Option(None, "--out", help="Write the per-answer rows here as JSONL."),
) -> None:
    """Precision, recall and false-pass rate of a judge's pass verdicts against unit tests, with 95% intervals.

    Answers: the tasks' references, broken variants of them, `--from` samples, and (reported apart) answers
    known to fool judges. Prints one JSON object; a table goes to stderr."""
    from rlaif.cli.progress import stderr
    from rlaif_rewards import calibrate as cal

    judge = load_judge(config, judge_name)  # validates the whole file: a bad one is its one-line error
    env, sandbox = cal.setting(config, env_name)
    answers, skipped = cal.answer_set(env, limit, run_dir)
    with progress_bar(f"calibrating on {env.name}", len(answers)) as advance:
        rows = asyncio.run(cal.run_all(env, judge, answers, sandbox, advance))
    if out:
        cal.write_rows(out, rows)
    result = cal.report(rows, judge, env.name, skipped)
    stderr.print(calibration_table(result))
    typer.echo(json.dumps(result))


def calibration_table(result: dict) -> Table:
    """The report's figures, one row each, for people."""
    table = Table("figure", "value", "95% CI", "counts", title=f"judge {result['model']} on {result['env']}")

    def add(name: str, figure: dict) -> None:
        low_high = "-" if figure["ci95"] is None else f"{figure['ci95'][0]:.2f}-{figure['ci95'][1]:.2f}"
        value = "-" if figure["value"] is None else f"{figure['value']:.2f}"
        table.add_row(name, value, low_high, f"{figure['successes']}/{figure['trials']}")

    for name in ("precision", "recall", "false_pass_rate"):
        add(name, result[name])
    for kind, figures in result["fooling"].items():
        add(f"fooled by {kind}", figures["pass_rate"])
    cost = result["cost_per_verdict"]
    table.add_row("cost per verdict", "-" if cost is None else f"${cost:.6f}", "",
                  f"{result['priced_verdicts']} judge verdicts")
    table.add_row("failed verdicts", str(result["failed_verdicts"]), "", f"of {result['verdicts']}")
    return table
