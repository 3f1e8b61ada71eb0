"""The learner's step against the bare forward and backward passes of the same micro-batches, side by side.

32 samples as the trainer builds them (4 groups of 8 episodes, each group sharing its prompt; ~80 tokens each:
prompts of 40-56 tokens, completions of 16-48) on the tiny model, in micro-batches of 8, on one torch thread (what
the learner actor gets with `train.learner_cpus=1`: Ray sets OMP_NUM_THREADS to an actor's CPUs). Each round
times, in turn:
- `step`: `Learner.step(samples)` in this process;
- `fwd_bwd`: the model's forward and backward on the same micro-batches (`model(ids, mask).logits.sum()`),
  the cost the step cannot go below;
- `update`: `fwd_bwd` plus gradient clipping and the AdamW step, the floor of a whole update;
- `ray`: `Learner.step` in a Ray actor with one CPU, as the trainer calls it (what Ray adds: `ray` - `step`).
Then `step` runs under torch's profiler: `breakdown_ms` is the ops with the most self time, per step.

Prints one JSON object: medians over the rounds and their ratios. Quote the ratios: the machine is shared.
Usage: python benchmarks/learner_step.py [--rounds 15] [--no-ray]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from machine import cpu  # benchmarks/machine.py, beside this script

from rlaif.train.learner import Learner, Sample

MODEL = Path(__file__).resolve().parents[1] / "models" / "tiny"
GROUPS, GROUP_SIZE, MICRO_BATCH = 4, 8, 8


def make_samples(vocab: int, seed: int = 0) -> list[Sample]:
    rng = random.Random(seed)
    samples = []
    for _ in range(GROUPS):
        prompt = [rng.randrange(3, vocab) for _ in range(rng.randint(40, 56))]
        for _ in range(GROUP_SIZE):
            completion = [rng.randrange(3, vocab) for _ in range(rng.randint(16, 48))]
            samples.append(Sample(prompt, completion, [-6.5] * len(completion), [1] * len(completion),
                                  rng.choice([1.0, -1.0])))
    return samples


def fwd_bwd(learner: Learner, samples: list[Sample]) -> None:
    """The model's forward and backward on the step's micro-batches, nothing else."""
    learner.optimizer.zero_grad(set_to_none=True)
    for at in range(0, len(samples), MICRO_BATCH):
        chunk = samples[at:at + MICRO_BATCH]
        width = max(len(s.prompt_ids) + len(s.completion_ids) for s in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        for i, s in enumerate(chunk):
            ids[i, :len(s.prompt_ids) + len(s.completion_ids)] = torch.tensor(s.prompt_ids + s.completion_ids)
        learner.model(input_ids=ids, attention_mask=(ids != 0).long()).logits.sum().backward()


def update(learner: Learner, samples: list[Sample]) -> None:
    fwd_bwd(learner, samples)
    torch.nn.utils.clip_grad_norm_(learner.model.parameters(), 1.0)
    learner.optimizer.step()


def ray_step(samples: list[Sample]) -> Callable[[], object]:
    """`Learner.step` on `samples` in a Ray actor with one CPU (a local Ray, started here), as the trainer calls it."""
    from rlaif.cluster.local_ray import init_local_ray

    ray = init_local_ray(num_cpus=max(2, os.cpu_count() or 1))
    actor = ray.remote(Learner).options(num_cpus=1).remote(str(MODEL), lr=3e-4, micro_batch=MICRO_BATCH)
    return lambda: ray.get(actor.step.remote(samples))


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def breakdown(learner: Learner, samples: list[Sample], steps: int = 3, top: int = 12) -> dict[str, float]:
    """Milliseconds of self time per step of the `top` ops of `Learner.step`, by torch's profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            learner.step(samples)
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return {e.key: round(e.self_cpu_time_total / 1000 / steps, 2) for e in ops}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    learner = Learner(str(MODEL), lr=3e-4, micro_batch=MICRO_BATCH)
    samples = make_samples(learner.model.config.vocab_size)
    paths = {"step": lambda: learner.step(samples), "fwd_bwd": lambda: fwd_bwd(learner, samples),
             "update": lambda: update(learner, samples)}
    if not args.no_ray:
        paths["ray"] = ray_step(samples)
    times: dict[str, list[float]] = {name: [] for name in paths}
    for round_ in range(args.rounds + 2):  # two warm-up rounds
        for name, fn in paths.items():
            seconds = timed(fn)
            if round_ >= 2:
                times[name].append(seconds)
    median = {name: statistics.median(values) for name, values in times.items()}
    out = {f"{name}_s": round(value, 4) for name, value in median.items()}
    out.update(step_over_fwd_bwd=round(median["step"] / median["fwd_bwd"], 3),
               step_over_update=round(median["step"] / median["update"], 3))
    if "ray" in median:
        out["ray_over_step"] = round(median["ray"] / median["step"], 3)
    out["breakdown_ms"] = breakdown(learner, samples)
    out["params"] = {"samples": len(samples), "mean_tokens": sum(len(s.prompt_ids) + len(s.completion_ids)
                                                                 for s in samples) / len(samples),
                     "micro_batch": MICRO_BATCH, "threads": torch.get_num_threads(), "rounds": args.rounds,
                     "parameters": sum(p.numel() for p in learner.model.parameters())}
    out["cpu"] = cpu()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
