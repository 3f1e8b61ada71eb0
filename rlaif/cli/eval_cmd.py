"""`rlaif eval ENV --policy SPEC`: run a policy endpoint on an environment, grade, write trajectories and pass@k."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import typer
from rich.table import Table

from rlaif.cli.env_cmd import load_reward
from rlaif.cli.progress import progress_bar, render


def eval_command(
    env_name: str = typer.Argument(..., metavar="ENV", help="A registered environment or module:Class."),
    policy: str = typer.Option(..., "--policy", help="openai:BASE_URL:MODEL or anthropic:MODEL."),
    samples: int = typer.Option(1, "-n", help="Samples per task (pass@k uses k = n)."),
    out: Path = typer.Option(None, "--out", help="Output directory (default runs/eval-<env>-<time>)."),
    split: str = typer.Option("test", help="train, test or all."),
    limit: int = typer.Option(0, help="Only the first N tasks (0: all)."),
    data: str = typer.Option(None, "--data", help="Data file, passed to the environment as env.args.data."),
    temperature: float = typer.Option(1.0, help="Sampling temperature."),
    max_tokens: int = typer.Option(512, help="Maximum tokens per model turn."),
    concurrency: int = typer.Option(8, help="Episodes at once."),
    backend: str = typer.Option("docker", help="Sandbox backend: docker or local."),
    config: str = typer.Option(None, "--config", help="Config file whose reward.judges judged graders use."),
) -> None:
    """Run the agent loop with a policy, grade every episode, write trajectories.jsonl and summary.json."""
    from rlaif.config import SandboxConfig
    from rlaif.env import GradeContext
    from rlaif.evaluation import evaluate, summarize
    from rlaif.policy import Sampling, policy_from_spec
    from rlaif.registry import load_environment
    from rlaif.sandbox.pool import SandboxPools

    env = load_environment(env_name, {"data": data} if data else {})
    tasks = [t for s in (("train", "test") if split == "all" else (split,)) for t in env.tasks(s)]
    tasks = tasks[:limit] if limit else tasks
    out = out or Path("runs") / f"eval-{env.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    the_policy = policy_from_spec(policy)
    sampling = Sampling(temperature=temperature, max_tokens=max_tokens)
    started = time.monotonic()

    async def run() -> list:
        sandbox = SandboxConfig(backend=backend, pool_size=min(concurrency, 8))
        judges, components = load_reward(config)
        with (out / "trajectories.jsonl").open("a") as sink:
            def record(traj) -> None:
                sink.write(traj.model_dump_json() + "\n")
                sink.flush()
                advance()

            async with SandboxPools.from_config(sandbox, run_id=f"eval-{env.name}") as pools:
                with progress_bar(f"eval {env.name}", len(tasks) * samples) as advance:
                    try:
                        return await evaluate(env, tasks, lambda t: the_policy, GradeContext(pools, judges, components),
                                              sampling, samples=samples, concurrency=concurrency, on_done=record)
                    finally:
                        await the_policy.close()
                        for judge in judges.values():
                            await judge.close()

    trajectories = asyncio.run(run())
    summary = {"env": env.name, "policy": the_policy.name, "split": split, "samples": samples,
               **summarize(trajectories, samples), "minutes": round((time.monotonic() - started) / 60, 2)}
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out / "summary.json")
    table = Table("environment", "policy", "tasks", "graded", "skipped", "pass@1", f"pass@{samples}", "mean reward")
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    table.add_row(env.name, the_policy.name, str(summary["tasks"]), str(summary["graded"]),
                  str(sum(summary["skipped"].values())), fmt(summary["pass@1"]), fmt(summary[f"pass@{samples}"]),
                  fmt(summary["mean_reward"]))
    typer.echo(render(table))
    for reason, count in summary["skipped"].items():
        typer.echo(f"skipped {count}: {reason}")
    typer.echo(f"trajectories and summary in {out}")
