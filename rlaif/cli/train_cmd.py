"""`rlaif train CONFIG [key=value ...]` and `rlaif train --resume RUN_DIR`: GRPO on Ray, with live progress."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import TextColumn

from rlaif.cli.progress import make_bar, stderr
from rlaif.errors import RlaifError

SHOWN = (("reward/mean", "reward {:.3f}"), ("pass_rate", "pass {:.2f}"), ("staleness/max", "stale {:.0f}"),
         ("time/step_s", "{:.2f}s/step"), ("time/sync_s", "sync {:.3f}s"))


def train_command(
    args: list[str] = typer.Argument(None, metavar="[CONFIG] [KEY=VALUE]...",
                                     help="A config file, then overrides such as learner.steps=50."),
    resume: Path = typer.Option(None, "--resume", help="Continue this run directory from its last checkpoint "
                                                        "(its config.yaml is the config; overrides still apply)."),
    check: bool = typer.Option(False, "--check", help="Only run the preflight (model, environment, sandbox, judges, "
                                                      "run root) and print what it verified; start and write nothing."),
    probe: bool = typer.Option(False, "--probe", help="In the preflight, also make one real call to each judge."),
) -> None:
    """Train the student with GRPO: rollout workers, reward service and learner on Ray.

    A preflight runs first, in this process, before Ray or anything else starts (`rlaif.cli.preflight`)."""
    from rlaif.cli.preflight import preflight
    from rlaif.core.config import load_config

    args = list(args or [])
    if resume is not None:
        if args and "=" not in args[0]:
            raise RlaifError("--resume takes its config from the run directory; pass only KEY=VALUE overrides")
        config_path: str | Path | None = resume / "config.yaml"
        if not Path(config_path).exists():
            raise RlaifError(f"{resume} is not a run directory (no config.yaml); pass a directory under runs/")
    elif not args or "=" in args[0]:
        raise RlaifError("no config file: run `rlaif train CONFIG [KEY=VALUE ...]`, e.g. examples/cpu-tiny.yaml")
    else:
        config_path = args.pop(0)
    config = load_config(config_path, args)
    verified = preflight(config, run_dir=resume, probe=probe)
    if check:
        typer.echo("\n".join(["ok  config " + str(config_path), *verified]))
        return
    from rlaif.cluster.reaper import clean_after_killed_runs
    from rlaif.train.trainer import train

    clean_after_killed_runs()  # what a run killed together with its reaper left; live runs' things stay

    with make_bar(TextColumn("{task.fields[status]}")) as bar:
        task = bar.add_task(f"train {config.run.name}", total=config.learner.steps, status="starting Ray and engines")

        def on_step(progress) -> None:
            shown = [fmt.format(progress.metrics[key]) for key, fmt in SHOWN if key in progress.metrics]
            bar.update(task, completed=progress.step, status="  ".join(shown))
            if not stderr.is_terminal:  # a log (a Ray job's, say) gets one line per step instead of a live bar
                stderr.print(f"step {progress.step}/{progress.steps}  " + "  ".join(shown), highlight=False)

        summary = train(config, resume=resume, on_step=on_step)
    typer.echo(json.dumps(summary, indent=2))
