"""`rlaif collect ENV --teacher SPEC`: teacher trajectories that pass the graders, as an SFT dataset."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import typer
from rich.table import Table

from rlaif.cli.env_cmd import ENV_ARG_HELP, env_args, grading, split_tasks
from rlaif.cli.preflight import episode_preflight
from rlaif.cli.progress import progress_bar, render
from rlaif.errors import RlaifError


def collect_command(
    env_name: str = typer.Argument(..., metavar="ENV", help="A registered environment or module:Class."),
    teacher_spec: str = typer.Option(..., "--teacher",
                                     help="reference, openai:BASE_URL:MODEL or anthropic:MODEL."),
    samples: int = typer.Option(1, "-n", help="Samples per task and variant."),
    out: Path = typer.Option(None, "--out", help="Output directory (default runs/collect-<env>-<time>); "
                             "an existing one is resumed."),
    split: str = typer.Option("train", help="train, test or all."),
    limit: int = typer.Option(0, help="Only the first N tasks (0: all)."),
    data: str = typer.Option(None, "--data", help="Data file, passed to the environment as env.args.data."),
    arg: list[str] = typer.Option(None, "--arg", metavar="KEY=VALUE", help=ENV_ARG_HELP),
    temperature: float = typer.Option(1.0, help="Sampling temperature."),
    max_tokens: int = typer.Option(512, help="Maximum tokens per teacher turn."),
    min_reward: float = typer.Option(1.0, help="Keep trajectories whose reward is at least this."),
    system_prompts: Path = typer.Option(None, "--system-prompts",
                                        help="Alternative system prompts, separated by lines holding only ---."),
    rewrites: int = typer.Option(0, help="Teacher rewrites of each task's statement (needs a model teacher)."),
    budget_usd: float = typer.Option(None, help="Start no attempt once the teacher's cost reaches this."),
    input_usd_per_mtok: float = typer.Option(0.0, help="Teacher price, USD per million input tokens."),
    output_usd_per_mtok: float = typer.Option(0.0, help="Teacher price, USD per million output tokens."),
    concurrency: int = typer.Option(8, help="Episodes at once."),
    backend: str = typer.Option("docker", help="Sandbox backend: docker or local."),
    config: str = typer.Option(None, "--config", help="Config file whose reward.judges judged graders use."),
    max_skipped: float = typer.Option(1.0, min=0.0, max=1.0, help="Fail when a larger share of this run's attempts "
                                      "failed on infrastructure (1.0: only when all did)."),
) -> None:
    """Run a teacher on an environment's tasks, grade every trajectory, keep those that pass (resumable)."""
    from rlaif.distill.collect import Collector, Elicitation, Teacher, summary
    from rlaif.distill.dataset import CollectionDir
    from rlaif.distill.elicit import read_system_prompts
    from rlaif.eval.evaluation import check_skipped, infra_fix
    from rlaif.policies.endpoints import Sampling
    from rlaif.registry import load_environment
    from rlaif_rewards.cost import Price

    if min(samples, concurrency) < 1 or rewrites < 0:
        raise RlaifError("-n and --concurrency must be at least 1, --rewrites at least 0")
    price = Price(input_per_mtok=input_usd_per_mtok, output_per_mtok=output_usd_per_mtok)
    if budget_usd is not None and teacher_spec != "reference" and price == Price():
        raise RlaifError("--budget-usd needs the teacher's prices: give --input-usd-per-mtok and --output-usd-per-mtok")
    teacher = Teacher(teacher_spec)
    env = load_environment(env_name, env_args(data, arg))
    tasks = split_tasks(env, split, limit)
    variants = read_system_prompts(system_prompts) if system_prompts else []
    elicitation = Elicitation(Sampling(temperature=temperature, max_tokens=max_tokens), samples=samples,
                              system_prompts=variants, rewrites=rewrites, min_reward=min_reward)
    collector = Collector(env, teacher, elicitation, price=price, budget_usd=budget_usd, concurrency=concurrency)
    out = out or Path("runs") / f"collect-{env.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    endpoint = teacher.endpoint.base_url if teacher.endpoint is not None else None
    episode_preflight(env, tasks, out=out, backend=backend, config_path=config, endpoint=endpoint, flag="--teacher")
    # Attempt ids number system prompts: resuming with other prompts would skip attempts it never made.
    collection = CollectionDir.open(out, {"env": env.name, "teacher": teacher.spec, "system_prompts": variants})
    attempts = collector.plan(tasks, collection)
    started = time.monotonic()

    async def run():
        try:
            async with grading(config, backend, concurrency, f"collect-{env.name}") as ctx:
                with progress_bar(f"collect {env.name}", len(attempts)) as advance:
                    return await collector.run(attempts, collection, ctx, advance)
        finally:
            await teacher.close()

    outcome = asyncio.run(run())
    result = summary(collection, outcome, env=env.name, teacher=teacher.spec, split=split,
                     budget_usd=budget_usd, minutes=round((time.monotonic() - started) / 60, 2))
    collection.write_summary(result)
    table = Table("", "kept", "rejected", "failed", "duplicate", "cost (USD)")
    table.add_row("this run", *(str(outcome.counts[s]) for s in ("kept", "rejected", "failed", "duplicate")),
                  f"{outcome.cost_usd:.4f}")
    table.add_row(f"all in {out}", *(str(result[s]) for s in ("kept", "rejected", "failed", "duplicate")), "")
    typer.echo(render(table))
    if outcome.stopped:
        typer.echo(f"stopped: {outcome.stopped}; {outcome.not_started} attempts not started (run again to go on)")
    # An early stop fails the run: the attempts it judged by (all failed) are the total.
    total = sum(outcome.failures.values()) if outcome.infra_stop else sum(outcome.counts.values())
    note = check_skipped(outcome.failures, total, max_skipped, infra_fix(next(iter(outcome.failures), ""), "--teacher"),
                         noun="attempt")
    if note:
        typer.echo(note)
    typer.echo(f"dataset in {out / 'train.jsonl'}, ledger and summary beside it")
