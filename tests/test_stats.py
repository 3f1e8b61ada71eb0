"""Intervals for pass@1 (`rlaif.eval.stats`, `rlaif compare`): right width, right pairing, right coverage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rlaif.errors import RlaifError
from rlaif.eval.stats import bootstrap_ci, paired_ci, read_pass_rates, task_pass_rates
from rlaif.types import RewardResult, Trajectory

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[1]


def _trajectory(task: str, i: int, passed: bool | None) -> Trajectory:
    """A graded sample (reward 1 or 0.4), or with `passed=None` one that failed on infrastructure."""
    if passed is None:
        return Trajectory(id=f"{task}#{i}", task_id=task, status="infra_error", error="sandbox died")
    return Trajectory(id=f"{task}#{i}", task_id=task, reward=RewardResult(total=1.0 if passed else 0.4))


def _write(folder: Path, rates: dict[str, float], samples: int = 4) -> Path:
    folder.mkdir()
    with (folder / "trajectories.jsonl").open("w") as sink:
        for task, rate in rates.items():
            for i in range(samples):
                sink.write(_trajectory(task, i, i < round(rate * samples)).model_dump_json() + "\n")
    return folder


def test_a_task_rate_counts_graded_samples_only_and_only_full_reward_passes():
    trajs = [_trajectory("a", 0, True), _trajectory("a", 1, False), _trajectory("a", 2, None),
             _trajectory("b", 0, False), _trajectory("c", 0, None)]
    assert task_pass_rates(trajs) == {"a": 0.5, "b": 0.0}


def test_the_interval_holds_the_mean_narrows_with_tasks_and_is_seeded():
    rng = np.random.default_rng(1)
    few = {f"t{i}": float(v) for i, v in enumerate(rng.random(20))}
    many = {f"t{i}": float(v) for i, v in enumerate(rng.random(400))}
    for rates in (few, many):
        lo, hi = bootstrap_ci(rates)
        assert lo < np.mean(list(rates.values())) < hi
    assert np.diff(bootstrap_ci(many))[0] < np.diff(bootstrap_ci(few))[0] / 3  # ~ 1/sqrt(20)
    assert bootstrap_ci(few, seed=3) == bootstrap_ci(few, seed=3)
    assert bootstrap_ci({"a": 0.25, "b": 0.25}) == [0.25, 0.25]


def test_the_95_percent_interval_covers_the_true_pass_rate_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    truth, covered, trials = 0.3, 0, 300
    for _ in range(trials):
        rates = {f"t{i}": float(rng.binomial(4, truth) / 4) for i in range(150)}
        lo, hi = bootstrap_ci(rates, seed=int(rng.integers(1 << 30)), resamples=1000)
        covered += lo <= truth <= hi
    assert 0.9 <= covered / trials <= 0.99


def test_pairing_cancels_the_spread_between_tasks():
    rng = np.random.default_rng(2)
    a = {f"t{i}": float(v) for i, v in enumerate(rng.random(60) * 0.8)}
    b = {task: rate + 0.05 for task, rate in a.items()} | {"only-b": 1.0}
    diff, interval, shared = paired_ci(a, b)
    assert (diff, interval, shared) == (0.05, [0.05, 0.05], 60), "the same gain on every task is certain"
    unpaired = np.diff(bootstrap_ci(a))[0]
    assert unpaired > 0.1, "while each side alone spans the tasks' spread"
    noisy = {task: rate + float(rng.normal(0.05, 0.1)) for task, rate in a.items()}
    _, (lo, hi), _ = paired_ci(a, noisy)
    assert lo < 0.05 < hi and hi - lo < unpaired
    with pytest.raises(RlaifError, match="share no task"):
        paired_ci({"x": 1.0}, {"y": 1.0})


def test_compare_prints_both_intervals_and_the_paired_difference(tmp_path):
    a = _write(tmp_path / "a", {f"t{i}": 0.25 for i in range(30)})
    b = _write(tmp_path / "b", {f"t{i}": 0.75 for i in range(30)})
    done = subprocess.run([sys.executable, "-m", "rlaif.cli", "compare", str(a), str(b), "--json"],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["a"]["pass@1"] == 0.25 and result["b"]["ci"] == [0.75, 0.75]
    assert result["b_minus_a"] == {"tasks": 30, "diff": 0.5, "ci": [0.5, 0.5]}
    table = subprocess.run([sys.executable, "-m", "rlaif.cli", "compare", str(a), str(b)], capture_output=True,
                           text=True, cwd=REPO, timeout=60)
    assert table.stdout.rstrip().endswith("the interval of B - A is above 0: B is better")


def test_compare_refuses_a_folder_that_is_not_an_evaluation(tmp_path):
    a = _write(tmp_path / "a", {"t": 1.0})
    done = subprocess.run([sys.executable, "-m", "rlaif.cli", "compare", str(a), str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"error: {tmp_path} holds no trajectories.jsonl; pass an `rlaif eval` "
                                        "output directory (its --out)"]
    (tmp_path / "dead").mkdir()
    (tmp_path / "dead" / "trajectories.jsonl").write_text(_trajectory("t", 0, None).model_dump_json() + "\n")
    with pytest.raises(RlaifError, match="has no graded episode"):
        read_pass_rates(tmp_path / "dead")


def test_the_wide_catalogue_has_discriminating_tests_and_a_held_out_split_in_the_hundreds():
    from rlaif.cli.quickstart_cmd import TASKS
    from rlaif.registry import load_environment
    from rlaif_environments.pyfunc.generated import generate_functions

    for seed in range(3):
        functions = generate_functions(10_000, seed, catalogue="wide")
        assert len(functions) == 646
        constant = [f["name"] for f in functions if len({repr(out) for _, out in f["cases"]}) < 2]
        assert constant == [], "a constant answer (`return False`) would pass these"
        env = load_environment("pyfunc", {**TASKS, "seed": seed})
        train, test = env.tasks("train"), env.tasks("test")
        assert len(test) >= 150 and not {t.id for t in train} & {t.id for t in test}


def test_each_seeded_episode_samples_with_its_own_seed():
    from rlaif.eval.evaluation import episode_sampling
    from rlaif.policies.endpoints import Sampling

    plain = Sampling(temperature=1.0)
    assert episode_sampling(plain, "t", 0) is plain, "no seed: the engine's own stream"
    seeded = Sampling(temperature=1.0, seed=3)
    seeds = {episode_sampling(seeded, task, i).seed for task in ("a", "b") for i in range(4)}
    assert len(seeds) == 8, "every sample of every task its own seed"
    assert episode_sampling(seeded, "a", 1) == episode_sampling(seeded, "a", 1)
    assert episode_sampling(seeded, "a", 1).seed != episode_sampling(Sampling(seed=4), "a", 1).seed
