"""Does GRPO with LoRA improve a real pretrained model? SmolLM2-135M-Instruct, held-out pass@1 before and after.

The student is `rlaif model import smollm2` (imported into OUT/smollm2 when `--model` is absent). The tasks are
pyfunc's generated functions with the quickstart's catalogue and split (`rlaif.cli.quickstart_cmd.TASKS`: about 310
training and 190 held-out functions that share no function); the base model solves about a fifth of them at
temperature 1, so most groups of 8 have signal. GRPO trains LoRA adapters (rank `--lora-rank`) on the training
split with sandboxed unit-test rewards for `--steps` steps; the merged model it writes is then evaluated exactly
as the base was: the first `--heldout` held-out tasks x 4 samples at temperature 1. Each pass@1 comes with a 95%
bootstrap interval over tasks and the gain with a paired one (`rlaif.eval.stats`).

Each stage is the `rlaif` command a user would run (`rlaif eval`, `rlaif train`), in its own process, one after
the other; their logs go to OUT/logs. Prints one JSON object (OUT/result.json too). On 2 CPU cores the default
run takes about 45 minutes: it is a benchmark, not a test.

Usage: python benchmarks/learning_real.py [--steps 16] [--heldout 64] [--lora-rank 16] [--lr 2e-4] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from rlaif.cli.quickstart_cmd import TASKS, _env_args, _evaluate, _rlaif, grpo_curve
from rlaif.eval.stats import bootstrap_ci, paired_ci, read_pass_rates

CONFIG = Path(__file__).resolve().parents[1] / "examples" / "smollm2-lora.yaml"
MAX_TOKENS = yaml.safe_load(CONFIG.read_text())["rollout"]["max_tokens"]
"""Evaluations sample as many tokens as the rollouts."""


def grpo_config(out: Path, model: Path, args: argparse.Namespace) -> Path:
    """`examples/smollm2-lora.yaml` (LoRA on the imported model, the training split, unit-test rewards in local
    sandboxes), with this run's model, root, seed, steps, rank and learning rate."""
    config = yaml.safe_load(CONFIG.read_text())
    config["run"].update(root=str(out), seed=args.seed)
    config["model"]["path"] = str(model)
    config["env"]["args"] = {**TASKS, "seed": args.seed}
    config["learner"].update(lr=args.lr, steps=args.steps, lora_rank=args.lora_rank, lora_alpha=2 * args.lora_rank)
    path = out / "grpo.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--heldout", type=int, default=64, help="held-out tasks evaluated (x 4 samples)")
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", type=Path, default=None, help="an imported smollm2 (default: import one)")
    parser.add_argument("--out", type=Path, default=Path("runs/learning_real"))
    args = parser.parse_args()
    started = time.monotonic()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    model = args.model or out / "smollm2"
    if not (model / "config.json").is_file():
        _rlaif(logs, "model", "import", "smollm2", "--out", str(model), "--force")
    evaluation = ["--split", "test", "--limit", str(args.heldout), "-n", "4", "--temperature", "1.0",
                  "--max-tokens", str(MAX_TOKENS), "--concurrency", "16"]
    env = _env_args(args.seed)
    _evaluate(logs, f"vllm:{model}", out / "eval-base", "local", env, args.seed, evaluation)
    before_train = time.monotonic()
    _rlaif(logs, "train", str(grpo_config(out, model, args)))
    train_minutes = (time.monotonic() - before_train) / 60
    run = max(out.glob("grpo-lora-*"), key=lambda p: p.stat().st_mtime)
    _evaluate(logs, f"vllm:{run / 'model'}", out / "eval-grpo", "local", env, args.seed, evaluation)
    base, grpo = read_pass_rates(out / "eval-base"), read_pass_rates(out / "eval-grpo")
    gain, gain_ci, _ = paired_ci(base, grpo, seed=args.seed)
    result = {
        "model": "SmolLM2-135M-Instruct (rlaif model import smollm2)", "held_out_tasks": len(base),
        "samples_per_task": 4, "steps": args.steps, "lora_rank": args.lora_rank, "lr": args.lr, "seed": args.seed,
        "pass_at_1_base": round(sum(base.values()) / len(base), 3), "ci_base": bootstrap_ci(base, seed=args.seed),
        "pass_at_1_grpo": round(sum(grpo.values()) / len(grpo), 3), "ci_grpo": bootstrap_ci(grpo, seed=args.seed),
        "gain": round(gain, 3), "gain_ci": gain_ci, "grpo_curve": grpo_curve(run),
        "train_minutes": round(train_minutes, 1), "minutes": round((time.monotonic() - started) / 60, 1),
        "run_dir": str(run),
    }
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
