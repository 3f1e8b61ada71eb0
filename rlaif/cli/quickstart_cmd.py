"""`rlaif quickstart` (`make quickstart`): the whole warm-start pipeline on the CPU, with held-out pass@1 at each stage.

Each stage is the `rlaif` command a user would run, printed before it runs, in its own process:
evaluate the base model, collect teacher trajectories that pass the unit tests, fine-tune on them (SFT),
evaluate, run GRPO from the SFT model with sandboxed unit tests (`examples/quickstart.yaml`), evaluate again.
Evaluation is on the held-out split of the generated `pyfunc` tasks (`TASKS`: the wide catalogue, a held-out split
of about 190 functions that neither SFT nor GRPO sees); the teacher covers only the first `TEACHER_TASKS` training
tasks (a teacher budget), and GRPO trains on all of them. Each stage's pass@1 comes with a 95% bootstrap interval
over tasks, and each step between stages with a paired one (`rlaif.eval.stats`); `--seed` sets every seed: task
generation and split, sampling, SFT and GRPO.

The teacher is `reference` (each task's reference solution, no key or network needed) or a model
(`anthropic:MODEL`, `openai:BASE_URL:MODEL`), which then also judges GRPO's answers (a judge component, gated on
the tests). Each run replaces OUT; `OUT/summary.json` holds the pass@1 figures, their intervals and the minutes.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import typer
import yaml
from rich.table import Table

from rlaif.cli.progress import CONSOLE_FD, render
from rlaif.core.jsonl import read_jsonl
from rlaif.errors import RlaifError
from rlaif.eval.stats import bootstrap_ci, paired_ci, read_pass_rates, show_interval

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "quickstart.yaml"
TASKS = {"catalogue": "wide", "generated": 500, "test_fraction": 0.35}
"""pyfunc's arguments (and `seed`): about 310 training and 190 held-out functions of 34 families."""
TEACHER_TASKS = 150
EVAL = ["--split", "test", "-n", "4", "--temperature", "1.0", "--max-tokens", "48", "--concurrency", "16"]
STAGES = ("base", "sft", "grpo")
SFT = ["--lr", "3e-3", "--batch-size", "8", "--max-length", "256"]
SFT_EPOCHS = (20, 40, 60, 80)
"""The candidates: one run of the last, saved after each; the one chosen is the best on the validation slice."""
VALIDATION_TASKS = 40
"""Training-split tasks after the teacher's (never held-out ones, never in SFT's data) that choose SFT's epochs."""
VALIDATE = ["--split", "train", "--limit", str(VALIDATION_TASKS), "-n", "4", "--temperature", "1.0", "--max-tokens",
            "48", "--concurrency", "16"]


def quickstart_command(
    teacher: str = typer.Option("reference", "--teacher",
                                help="reference, anthropic:MODEL or openai:BASE_URL:MODEL (then also the judge)."),
    model: Path = typer.Option(Path("models/tiny"), "--model", help="The base model (built if missing)."),
    out: Path = typer.Option(Path("runs/quickstart"), "--out", help="Output directory (replaced on each run)."),
    config: Path = typer.Option(EXAMPLE, "--config", help="The GRPO stage's config."),
    backend: str = typer.Option("local", "--backend",
                                help="Sandbox for every grading: local (bubblewrap, about 3x faster here) or docker."),
    seed: int = typer.Option(0, "--seed", help="Every seed: task generation and split, sampling, SFT, GRPO."),
    teacher_tasks: int = typer.Option(TEACHER_TASKS, "--teacher-tasks", min=1,
                                      help="The teacher's budget: the first N training tasks."),
) -> None:
    """Base -> collect -> SFT -> GRPO on the CPU, and a table of held-out pass@1 after each stage."""
    if not config.is_file():
        raise RlaifError(f"GRPO config {config} does not exist; pass --config examples/quickstart.yaml")
    if backend not in ("local", "docker"):
        raise RlaifError(f"--backend {backend!r} is not local or docker")
    if teacher != "reference" and not teacher.startswith(("anthropic:", "openai:")):
        raise RlaifError(f"--teacher {teacher!r} is not reference, anthropic:MODEL or openai:BASE_URL:MODEL")
    if teacher.startswith("anthropic:") and not os.environ.get("ANTHROPIC_API_KEY"):
        raise RlaifError("--teacher anthropic:... needs ANTHROPIC_API_KEY in the environment")
    started = time.monotonic()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    logs = out / "logs"
    if not (model / "config.json").is_file():
        _rlaif(logs, "model", "tiny", "--out", str(model))
    env = _env_args(seed)
    _evaluate(logs, f"vllm:{model}", out / "eval-base", backend, env, seed)
    _rlaif(logs, "collect", "pyfunc", "--teacher", teacher, "--limit", str(teacher_tasks), "--max-tokens", "256",
           "--backend", backend, "--out", str(out / "teacher"), *env)
    counts = json.loads((out / "teacher" / "summary.json").read_text())
    _say(f"kept {counts['kept']} teacher trajectories that pass the tests, rejected {counts['rejected']}, "
         f"failed {counts['failed']}")
    _rlaif(logs, "sft", str(out / "teacher"), "--model", str(model), "--out", str(out / "sft"), *SFT,
           "--seed", str(seed), "--epochs", str(SFT_EPOCHS[-1]),
           "--snapshot-epochs", ",".join(map(str, SFT_EPOCHS[:-1])))
    sft_run = json.loads((out / "sft" / "sft.json").read_text())
    _say(f"{sft_run['rows_trained']} conversations, {sft_run['steps']} steps, loss {sft_run['train_loss_first']:.4f} "
         f"-> {sft_run['train_loss']:.4f}")
    validation = {}
    for epochs in SFT_EPOCHS:
        _evaluate(logs, f"vllm:{_sft_model(out, epochs)}", out / f"validate-sft-{epochs}", backend, env, seed,
                  [*VALIDATE, "--skip", str(teacher_tasks)])
        validation[epochs] = read_pass_rates(out / f"validate-sft-{epochs}")
    chosen = max(SFT_EPOCHS, key=lambda e: (sum(validation[e].values()), -e))  # ties: the shorter training
    _say(f"SFT's epochs: {chosen}, the best on {VALIDATION_TASKS} other training tasks")
    sft = _sft_model(out, chosen)
    _evaluate(logs, f"vllm:{sft}", out / "eval-sft", backend, env, seed)
    _rlaif(logs, "train", str(_grpo_config(config, out, teacher, backend, seed, sft)))
    [run] = sorted(out.glob("grpo-*"))
    curve = grpo_curve(run)
    _say(f"training reward {curve['reward_first']} (first 10 steps) -> {curve['reward_last']} (last 10), entropy "
         f"{curve['entropy_first']} -> {curve['entropy_last']}, held-out probe by step "
         f"{curve['heldout_probe'] or 'not run'}; groups trained {curve['groups_trained']}, dropped without signal "
         f"{curve['groups_no_signal']}")
    _evaluate(logs, f"vllm:{run / 'model'}", out / "eval-grpo", backend, env, seed)
    _rlaif(logs, "report", str(run))
    rates = {stage: read_pass_rates(out / f"eval-{stage}") for stage in STAGES}
    pass_at_1 = {stage: round(sum(r.values()) / len(r), 3) for stage, r in rates.items()}
    ci = {stage: bootstrap_ci(r, seed=seed) for stage, r in rates.items()}
    diffs = {f"{b}_minus_{a}": paired_ci(rates[a], rates[b], seed=seed) for a, b in itertools.pairwise(STAGES)}
    ci |= {name: interval for name, (_, interval, _) in diffs.items()}
    minutes = round((time.monotonic() - started) / 60, 1)
    summary = {"pass_at_1": pass_at_1, "ci": ci, "held_out_tasks": len(rates["base"]),
               "teacher_tasks": teacher_tasks, "train_tasks": _train_tasks(seed), "samples_per_task": int(EVAL[3]),
               "sft_epochs": chosen, "sft_validation": {str(e): round(sum(r.values()) / len(r), 3)
                                                         for e, r in validation.items()},
               "seed": seed, "minutes": minutes, "teacher": teacher, "backend": backend, "run_dir": str(run),
               "grpo_curve": curve, "report": str(run / "report.html")}
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out / "summary.json")
    table = Table("stage", "held-out pass@1", "95% interval", "gain over the stage before", "its paired interval")
    names = {"base": f"base ({model})", "sft": f"SFT on {teacher} trajectories, {chosen} epochs",
             "grpo": "GRPO from SFT, unit-test rewards"}
    for before, stage in itertools.pairwise((None, *STAGES)):
        diff = diffs.get(f"{stage}_minus_{before}")
        table.add_row(names[stage], f"{pass_at_1[stage]:.3f}", show_interval(ci[stage]),
                      "" if diff is None else f"{diff[0]:+.3f}", "" if diff is None else show_interval(diff[1]))
    typer.echo(render(table))
    typer.echo(f"{summary['held_out_tasks']} held-out tasks x {summary['samples_per_task']} samples; the teacher "
               f"covered {teacher_tasks} of {summary['train_tasks']} training tasks, GRPO trained on all of them")
    typer.echo(f"SFT's epochs chosen on {VALIDATION_TASKS} other training tasks (pass@1 by epochs: "
               + ", ".join(f"{e}: {v}" for e, v in summary["sft_validation"].items()) + ")")
    typer.echo(f"{minutes} minutes; summary in {out}/summary.json, each stage's log in {logs}")
    typer.echo(f"report of the GRPO run (curves, trajectories): {run / 'report.html'}")


def grpo_curve(run: Path) -> dict:
    """The GRPO run's learning curve, from its metrics.jsonl: the training reward and the policy's entropy over the
    first and last 10 steps, the held-out probe (`train.heldout_every`) by step, and the groups trained and dropped."""
    steps = read_jsonl(run / "metrics.jsonl", ("step",), "metrics line")

    def mean(key: str, part: list[dict]) -> float | None:
        values = [m[key] for m in part if m.get(key) is not None]
        return round(sum(values) / len(values), 3) if values else None

    return {"reward_first": mean("reward/mean", steps[:10]), "reward_last": mean("reward/mean", steps[-10:]),
            "entropy_first": mean("entropy", steps[:10]), "entropy_last": mean("entropy", steps[-10:]),
            "heldout_probe": {m["step"]: round(m["heldout/pass@1"], 3) for m in steps
                              if m.get("heldout/pass@1") is not None},
            "groups_trained": sum(len(m["trained_groups"]) for m in steps),
            "groups_no_signal": steps[-1].get("dropped_total/no_signal", 0) if steps else 0}


def _rlaif(logs: Path, *args: str) -> None:
    """Run one `rlaif` command as a user would, echoing it first; a failed stage ends the quickstart with its error.

    The stage's stdout and stderr, with every library's warnings and start-up notes, go to `logs/NAME.log` (NAME: the
    stage's output folder); its progress bar draws on this terminal (`RLAIF_CONSOLE_FD`)."""
    name = Path(args[args.index("--out") + 1]).name if "--out" in args else args[0]
    log = logs / f"{name}.log"
    typer.secho("$ rlaif " + " ".join(args), bold=True, err=True)
    started = time.monotonic()
    logs.mkdir(parents=True, exist_ok=True)
    console = os.dup(sys.stderr.fileno())
    try:
        with log.open("w") as sink:
            done = subprocess.run([sys.executable, "-m", "rlaif.cli", *args], stdout=sink, stderr=subprocess.STDOUT,
                                  env={**os.environ, CONSOLE_FD: str(console)}, pass_fds=(console,))
    finally:
        os.close(console)
    if done.returncode:
        raise RlaifError(f"quickstart stage `rlaif {args[0]}` failed (exit {done.returncode}): {_cause(log)} "
                         f"(its whole output: {log})")
    typer.secho(f"  [{time.monotonic() - started:.0f} s; log {log}]", dim=True, err=True)


def _cause(log: Path) -> str:
    """A failed stage's cause: its `error:` line, else the last line of its traceback."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    return (errors or lines or ["it printed nothing"])[-1]


def _say(figures: str) -> None:
    typer.secho("  " + figures, err=True)


def _env_args(seed: int) -> list[str]:
    """`--arg KEY=VALUE` options for pyfunc's tasks of this seed."""
    return [x for key, value in {**TASKS, "seed": seed}.items() for x in ("--arg", f"{key}={value}")]


def _train_tasks(seed: int) -> int:
    from rlaif.registry import load_environment

    return len(load_environment("pyfunc", {**TASKS, "seed": seed}).tasks("train"))


def _sft_model(out: Path, epochs: int) -> Path:
    """The SFT model after `epochs`: the run's output for the last candidate, else its snapshot."""
    return out / "sft" if epochs == SFT_EPOCHS[-1] else out / "sft" / f"epoch-{epochs}"


def _evaluate(logs: Path, policy: str, out: Path, backend: str, env: list[str], seed: int,
              tasks: list[str] = EVAL) -> None:
    _rlaif(logs, "eval", "pyfunc", "--policy", policy, *tasks, "--backend", backend, "--out", str(out), *env,
           "--seed", str(seed))
    summary = json.loads((out / "summary.json").read_text())
    if summary["pass@1"] is None or summary["skipped"]:
        raise RlaifError(f"evaluation in {out} skipped episodes {summary['skipped']}: infrastructure, not the model")
    _say(f"pass@1 {summary['pass@1']:.3f} {show_interval(summary['pass@1_ci'])} on {summary['tasks']} tasks x "
         f"{summary['samples']} samples")


def _grpo_config(example: Path, out: Path, teacher: str, backend: str, seed: int = 0, sft: Path | None = None) -> Path:
    """The example config pointed at the SFT model (default OUT/sft), OUT and this seed's tasks; with a model
    teacher, the teacher judges too."""
    config = yaml.safe_load(example.read_text())
    config["model"] = {**config.get("model", {}), "path": str(sft or out / "sft")}
    config["run"] = {**config.get("run", {}), "name": "grpo", "root": str(out), "seed": seed}
    env = config.setdefault("env", {})
    env["args"] = {**env.get("args", {}), **TASKS, "seed": seed}
    config["sandbox"] = {**config.get("sandbox", {}), "backend": backend}
    if teacher != "reference":
        reward = config.setdefault("reward", {})
        reward["judges"] = [{"name": "teacher", "endpoint": teacher}]
        reward["components"] = [*reward.get("components", []),
                                {"kind": "judge", "judge": "teacher", "weight": 0.25, "gate": "tests"}]
    path = out / "grpo.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
