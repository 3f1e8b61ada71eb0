"""`rlaif quickstart` (`make quickstart`): the whole warm-start pipeline on the CPU, with held-out pass@1 at each stage.

Each stage is the `rlaif` command a user would run, printed before it runs, in its own process:
evaluate the base model, collect teacher trajectories that pass the unit tests, fine-tune on them (SFT),
evaluate, run GRPO from the SFT model with sandboxed unit tests (`examples/quickstart.yaml`), evaluate again.
Evaluation is on the held-out split of the generated `pyfunc` tasks, which neither SFT nor GRPO sees; the
teacher covers only the first `TEACHER_TASKS` training tasks (a teacher budget), and GRPO trains on all of them.

The teacher is `reference` (each task's reference solution, no key or network needed) or a model
(`anthropic:MODEL`, `openai:BASE_URL:MODEL`), which then also judges GRPO's answers (a judge component, gated on
the tests). Each run replaces OUT; `OUT/summary.json` holds the pass@1 figures and the minutes.
"""

from __future__ import annotations

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

from rlaif.cli.progress import render
from rlaif.errors import RlaifError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "quickstart.yaml"
TEACHER_TASKS = 45
EVAL = ["--split", "test", "-n", "8", "--temperature", "1.0", "--max-tokens", "48", "--concurrency", "16"]
SFT = ["--epochs", "60", "--lr", "3e-3", "--batch-size", "8", "--max-length", "256"]


def quickstart_command(
    teacher: str = typer.Option("reference", "--teacher",
                                help="reference, anthropic:MODEL or openai:BASE_URL:MODEL (then also the judge)."),
    model: Path = typer.Option(Path("models/tiny"), "--model", help="The base model (built if missing)."),
    out: Path = typer.Option(Path("runs/quickstart"), "--out", help="Output directory (replaced on each run)."),
    config: Path = typer.Option(EXAMPLE, "--config", help="The GRPO stage's config."),
    backend: str = typer.Option("local", "--backend",
                                help="Sandbox for every grading: local (bubblewrap, about 3x faster here) or docker."),
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
    if not (model / "config.json").is_file():
        _rlaif("model", "tiny", "--out", str(model))
    pass_at_1 = {"base": _evaluate(f"vllm:{model}", out / "eval-base", backend)}
    _rlaif("collect", "pyfunc", "--teacher", teacher, "--limit", str(TEACHER_TASKS), "--max-tokens", "256",
           "--backend", backend, "--out", str(out / "teacher"))
    _rlaif("sft", str(out / "teacher"), "--model", str(model), "--out", str(out / "sft"), *SFT)
    pass_at_1["sft"] = _evaluate(f"vllm:{out / 'sft'}", out / "eval-sft", backend)
    _rlaif("train", str(_grpo_config(config, out, teacher, backend)))
    [run] = sorted(out.glob("grpo-*"))
    pass_at_1["grpo"] = _evaluate(f"vllm:{run / 'model'}", out / "eval-grpo", backend)
    minutes = round((time.monotonic() - started) / 60, 1)
    summary = {"pass_at_1": pass_at_1, "minutes": minutes, "teacher": teacher, "backend": backend,
               "run_dir": str(run)}
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out / "summary.json")
    table = Table("stage", "held-out pass@1", "model")
    table.add_row("base", f"{pass_at_1['base']:.3f}", str(model))
    table.add_row(f"SFT on {teacher} trajectories", f"{pass_at_1['sft']:.3f}", str(out / "sft"))
    table.add_row("GRPO from SFT, unit-test rewards", f"{pass_at_1['grpo']:.3f}", str(run / "model"))
    typer.echo(render(table))
    typer.echo(f"{minutes} minutes; GRPO run directory {run} (`rlaif report {run}`); summary in {out}/summary.json")


def _rlaif(*args: str) -> None:
    """Run one `rlaif` command as a user would, echoing it first; a failed stage ends the quickstart."""
    typer.secho("$ rlaif " + " ".join(args), bold=True, err=True)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "rlaif.cli", *args])
    if done.returncode:
        raise RlaifError(f"quickstart stage `rlaif {args[0]}` failed (exit {done.returncode}); its output is above")
    typer.secho(f"[rlaif {args[0]}: {time.monotonic() - started:.0f} s]", bold=True, err=True)


def _evaluate(policy: str, out: Path, backend: str) -> float:
    _rlaif("eval", "pyfunc", "--policy", policy, *EVAL, "--backend", backend, "--out", str(out))
    summary = json.loads((out / "summary.json").read_text())
    if summary["pass@1"] is None or summary["skipped"]:
        raise RlaifError(f"evaluation in {out} skipped episodes {summary['skipped']}: infrastructure, not the model")
    return round(summary["pass@1"], 3)


def _grpo_config(example: Path, out: Path, teacher: str, backend: str) -> Path:
    """The example config pointed at the SFT model and OUT; with a model teacher, the teacher judges too."""
    config = yaml.safe_load(example.read_text())
    config["model"] = {**config.get("model", {}), "path": str(out / "sft")}
    config["run"] = {**config.get("run", {}), "name": "grpo", "root": str(out)}
    config["sandbox"] = {**config.get("sandbox", {}), "backend": backend}
    if teacher != "reference":
        reward = config.setdefault("reward", {})
        reward["judges"] = [{"name": "teacher", "endpoint": teacher}]
        reward["components"] = [*reward.get("components", []),
                                {"kind": "judge", "judge": "teacher", "weight": 0.25, "gate": "tests"}]
    path = out / "grpo.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
