"""`rlaif env list|check`: find environment plugins and prove them sound without a model."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import typer
from rich.table import Table

from rlaif.cli.progress import progress_bar, render

app = typer.Typer(help="List and check environment plugins.", no_args_is_help=True)


def load_reward(config_path: str | None) -> tuple[dict, list]:
    """The judges (by name) and extra reward components a config file defines (none without a config)."""
    if not config_path:
        return {}, []
    from rlaif.core.config import load_reward_config
    from rlaif_rewards.judge import Judge

    reward = load_reward_config(config_path)
    return {j.name: Judge(j) for j in reward.judges}, reward.components


ENV_ARG_HELP = "An environment argument (env.args.KEY), e.g. seed=1; repeatable. The value is read as YAML."


def env_args(data: str | None, pairs: list[str] | None) -> dict[str, Any]:
    """The environment's arguments from `--data` and `--arg KEY=VALUE` options; RlaifError for a malformed pair."""
    import yaml

    from rlaif.errors import RlaifError

    args: dict[str, Any] = {"data": data} if data else {}
    for pair in pairs or []:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise RlaifError(f"--arg {pair!r} is not KEY=VALUE (e.g. --arg seed=1)")
        try:
            args[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise RlaifError(f"--arg {pair!r}: {value!r} is not a YAML value; quote it") from None
    return args


def split_tasks(env: Any, split: str, limit: int = 0, skip: int = 0) -> list:
    """The tasks of `split` (train, test or all) after the first `skip`, the first `limit` of those when limit > 0;
    RlaifError when there are none."""
    from rlaif.errors import RlaifError

    if split not in ("train", "test", "all"):
        raise RlaifError(f"--split {split!r} is not train, test or all")
    tasks = [t for s in (("train", "test") if split == "all" else (split,)) for t in env.tasks(s)][skip:]
    if not tasks:
        raise RlaifError(f"environment {env.name!r} has no {split} tasks" + (f" after the first {skip}" if skip else "")
                         + "; check --split, --skip, --data and --arg")
    return tasks[:limit] if limit else tasks


@asynccontextmanager
async def grading(config_path: str | None, backend: str, concurrency: int, run_id: str) -> AsyncIterator[Any]:
    """A GradeContext for a command: sandbox pools sized to its concurrency and the config's judges, all closed
    on the way out (the judges even when the pools fail to start)."""
    from rlaif.core.config import SandboxConfig
    from rlaif.env import GradeContext
    from rlaif.sandbox.pool import SandboxPools

    judges, components = load_reward(config_path)
    try:
        sandbox = SandboxConfig(backend=backend, pool_size=min(concurrency, 8))
        async with SandboxPools.from_config(sandbox, run_id=run_id) as pools:
            yield GradeContext(pools, judges, components)
    finally:
        for judge in judges.values():
            await judge.close()


@app.command("list")
def list_envs(as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Installed environments (the `rlaif.environments` entry-point group)."""
    from rlaif.registry import entry_points

    found = {name: {"entry_point": ep.value, "package": ep.dist.name if ep.dist else None}
             for name, ep in sorted(entry_points().items())}
    if as_json:
        typer.echo(json.dumps(found))
        return
    table = Table("environment", "entry point", "package")
    for name, info in found.items():
        table.add_row(name, info["entry_point"], info["package"] or "")
    typer.echo(render(table))


@app.command("check")
def check(
    name: str = typer.Argument(..., help="A registered environment or module:Class."),
    data: str = typer.Option(None, "--data", help="Data file, passed to the environment as env.args.data."),
    arg: list[str] = typer.Option(None, "--arg", metavar="KEY=VALUE", help=ENV_ARG_HELP),
    split: str = typer.Option("all", help="train, test or all."),
    limit: int = typer.Option(0, help="Check only the first N tasks (0: all)."),
    backend: str = typer.Option("docker", help="Sandbox backend: docker or local."),
    concurrency: int = typer.Option(8, help="Episodes graded at once."),
    config: str = typer.Option(None, "--config", help="Config file whose reward.judges judged graders use."),
    pass_threshold: float = typer.Option(1.0, help="Reward a reference must reach (judges rarely give exactly 1)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Every task's reference earns full reward and an empty answer earns none; exit 1 otherwise, and 2 with one
    line when every answer failed on infrastructure (nothing was checked)."""
    from rlaif.eval.envcheck import check_environment
    from rlaif.eval.evaluation import check_skipped, infra_fix
    from rlaif.registry import load_environment

    env = load_environment(name, env_args(data, arg))
    tasks = split_tasks(env, split, limit)

    async def run() -> dict:
        async with grading(config, backend, concurrency, f"envcheck-{env.name}") as ctx:
            with progress_bar(f"checking {env.name}", 2 * len(tasks)) as advance:
                return await check_environment(env, tasks, ctx, concurrency, advance, pass_threshold)

    report = asyncio.run(run())
    if as_json:
        typer.echo(json.dumps(report))
    else:
        table = Table("environment", "tasks", "reference passed", "empty passed", "judge skipped", "violations")
        table.add_row(report["env"], str(report["tasks"]), str(report["reference_passed"]),
                      str(report["empty_passed"]), str(report["judge_skipped"]), str(len(report["failures"])))
        typer.echo(render(table))
        for failure in report["failures"][:50]:
            typer.echo(f"FAIL {failure['task']} ({failure['answer']}): {failure['problem']}  {failure['detail']}")
        for note in report["notes"]:
            typer.echo(f"note: {note}")
    infra = report["infra_skipped"]
    note = check_skipped(infra, 2 * len(tasks), 1.0, infra_fix(next(iter(infra), "")), noun="answer")
    if note and not as_json:
        typer.echo(note)
    raise typer.Exit(1 if report["failures"] else 0)
