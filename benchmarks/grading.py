"""Grading throughput on pyfunc's generated tasks: the pytest path, the call-and-compare path, and a floor.

The same answers (each task's reference and a wrong one) are graded three ways, side by side in one run, on each
sandbox backend:
- `pytest`: the task's cases as pytest asserts (`assert f(x) == expected`), run by `python3 -m pytest` in a fresh
  sandbox per answer and read from its JUnit report (`rlaif_rewards.unit_tests`, pyfunc's grader before #17);
- `new`: `rlaif_rewards.call_tests`, pyfunc's grader now: the answer in its own process answering calls, the
  comparison on the grader's side, sandboxes recycled after a reset;
- `floor`: a bare `python3 -c` running the answer and the same asserts, outside any sandbox (no isolation at all).
`concurrency` gradings are in flight at once for every path. Rounds alternate the paths, so that machine noise
hits them alike; each figure is grades per second over all rounds.

Prints one JSON object. Quote the ratios; absolute rates depend on the machine and its load.
Usage: python benchmarks/grading.py [--tasks 40] [--rounds 2] [--concurrency 4] [--backends local,docker]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import time
from collections.abc import Awaitable, Callable

from machine import cpu  # benchmarks/machine.py, beside this script

from rlaif.env import GradeContext, Submission
from rlaif.sandbox.base import Limits
from rlaif.sandbox.images import build_base_image
from rlaif.sandbox.pool import SandboxPools
from rlaif.types import Task
from rlaif_environments.pyfunc.env import PyFunc
from rlaif_rewards.unit_tests import UnitTests

PATHS = ("pytest", "new", "floor")


def local_python() -> str:
    """The plain system python, as a sandbox has it (pyenv shims are shell scripts, venvs load .pth files)."""
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else shutil.which("python3")


def pytest_grader(env: PyFunc, task: Task) -> UnitTests:
    """The task's cases as the pytest file pyfunc used to grade with."""
    name, cases = task.data["entry_point"], env.graders(task)[0].cases
    lines = [f"from solution import {name}\n"]
    lines += [f"\ndef test_{i}():\n    assert {name}({', '.join(map(repr, args))}) == {expected!r}\n"
              for i, (args, expected) in enumerate(cases)]
    return UnitTests(env.image_for(task), {"test_solution.py": "".join(lines)},
                     [f"test_solution.py::test_{i}" for i in range(len(cases))], timeout_s=20)


def floor_script(env: PyFunc, task: Task, code: str) -> str:
    name, cases = task.data["entry_point"], env.graders(task)[0].cases
    asserts = "".join(f"assert {name}({', '.join(map(repr, args))}) == {expected!r}\n" for args, expected in cases)
    return code + "\n" + asserts


async def timed(jobs: list[Callable[[], Awaitable[float]]], concurrency: int) -> tuple[float, float]:
    """Seconds to run every job at `concurrency` at once, and the mean reward they returned."""
    slots = asyncio.Semaphore(concurrency)

    async def one(job: Callable[[], Awaitable[float]]) -> float:
        async with slots:
            return await job()

    start = time.monotonic()
    rewards = await asyncio.gather(*(one(job) for job in jobs))
    return time.monotonic() - start, sum(rewards) / len(rewards)


async def steady(warmup: list[Callable[[], Awaitable[float]]], concurrency: int, pools: SandboxPools) -> None:
    """Run a few jobs untimed and wait for the pools' starts and closes: each path is timed from its own steady
    state (a path that closes its sandboxes leaves the pool short, and refilling it is not the next path's cost)."""
    await timed(warmup, concurrency)
    await asyncio.gather(*(pool.settle() for pool in pools.pools.values()))


async def measure(backend: str, tasks: list[Task], env: PyFunc, rounds: int, concurrency: int) -> dict:
    python = local_python()
    answers = [(task, code) for task in tasks for code in (task.reference, "def nothing():\n    pass\n")]
    limits = Limits(timeout_s=30, memory_mb=512)
    pytest_graders = {task.id: pytest_grader(env, task) for task in tasks}
    call_graders = {task.id: env.graders(task)[0] for task in tasks}

    async def floor(task: Task, code: str) -> float:
        proc = await asyncio.create_subprocess_exec(python, "-c", floor_script(env, task, code),
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.DEVNULL)
        return float(await proc.wait() == 0)

    seconds = dict.fromkeys(PATHS, 0.0)
    rewards: dict[str, list[float]] = {path: [] for path in PATHS}
    async with SandboxPools(limits, backend=backend, size=concurrency, run_id="bench-grading") as pools:
        ctx = GradeContext(pools)

        def grade(grader, task: Task, code: str) -> Callable[[], Awaitable[float]]:
            async def job() -> float:
                result = await grader.grade(task, Submission(messages=[], files={"solution.py": code.encode()}), ctx)
                return result.total or 0.0
            return job

        jobs = {
            "pytest": [grade(pytest_graders[t.id], t, c) for t, c in answers],
            "new": [grade(call_graders[t.id], t, c) for t, c in answers],
            "floor": [lambda t=t, c=c: floor(t, c) for t, c in answers],
        }
        for _ in range(rounds):
            for path in PATHS:
                await steady(jobs[path][:2 * concurrency], concurrency, pools)
                took, mean = await timed(jobs[path], concurrency)
                seconds[path] += took
                rewards[path].append(mean)
        stats = dict(pools.pools[tasks[0].data.get("image", env.image)].stats)
    per_s = {f"{path}_per_s": round(rounds * len(answers) / seconds[path], 2) for path in PATHS}
    return {**per_s, "new_over_pytest": round(per_s["new_per_s"] / per_s["pytest_per_s"], 2),
            "new_over_floor": round(per_s["new_per_s"] / per_s["floor_per_s"], 2),
            "mean_reward": {path: round(sum(r) / len(r), 3) for path, r in rewards.items()}, "pool": stats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--backends", default="local,docker")
    args = parser.parse_args()
    env = PyFunc()
    tasks = env.tasks("train")[:args.tasks]
    backends = args.backends.split(",")
    if "docker" in backends:
        build_base_image()
    out: dict = {backend: asyncio.run(measure(backend, tasks, env, args.rounds, args.concurrency))
                 for backend in backends}
    out.update(cpu=cpu(), grades_per_path=2 * len(tasks) * args.rounds, concurrency=args.concurrency)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
