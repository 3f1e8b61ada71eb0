"""Sandbox latency: running `python3 -c "print(1)"` four ways, side by side in one run.

(a) a plain local subprocess (the floor), (b) an exec in a warm pooled sandbox, (c) `docker run --rm`
per command, (d) sustained throughput of the pool with 2 x cores concurrent callers, each in its own
sandbox. (a) and (b) are sampled in alternation so that machine noise hits both alike.

Prints one JSON object. Quote the ratios; absolute times depend on the machine and its load.
Usage: python benchmarks/sandbox_latency.py [--samples 60] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import time

from rlaif.sandbox.base import Limits
from rlaif.sandbox.images import build_base_image
from rlaif.sandbox.pool import SandboxPool

CMD = ["python3", "-c", "print(1)"]


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000 if len(values) > 1 else values[0] * 1000


def local_python() -> str:
    """The plain system python, as a sandbox has it (pyenv shims are shell scripts, venvs load .pth files)."""
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else shutil.which("python3")


async def measure(samples: int, seconds: float, image: str) -> dict:
    python = local_python()
    callers = 2 * (os.cpu_count() or 1)
    local, pooled, acquire = [], [], []
    async with SandboxPool(image, Limits(), size=callers, run_id="bench") as pool:
        async with pool.sandbox() as sandbox:
            for _ in range(5):  # warm both paths
                subprocess.run([python, *CMD[1:]], capture_output=True, check=True)
                await sandbox.exec(CMD)
            for _ in range(samples):
                start = time.perf_counter()
                subprocess.run([python, *CMD[1:]], capture_output=True, check=True)
                local.append(time.perf_counter() - start)
                start = time.perf_counter()
                result = await sandbox.exec(CMD)
                pooled.append(time.perf_counter() - start)
                assert result.ok and result.stdout == "1\n", result
        await pool.settle()

        for _ in range(10):
            start = time.perf_counter()
            async with pool.sandbox():
                acquire.append(time.perf_counter() - start)
            await pool.settle()

        count = 0
        stop = time.perf_counter() + seconds

        async def caller() -> None:
            nonlocal count
            async with pool.sandbox() as sandbox:
                while time.perf_counter() < stop:
                    result = await sandbox.exec(CMD)
                    assert result.ok, result
                    count += 1

        await pool.settle()
        began = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        throughput = count / (time.perf_counter() - began)

    docker_run = []
    for _ in range(max(10, samples // 4)):
        start = time.perf_counter()
        subprocess.run(["docker", "run", "--rm", "--network", "none", image, *CMD], capture_output=True, check=True)
        docker_run.append(time.perf_counter() - start)

    figures = {
        "subprocess_p50_ms": pct(local, 50),
        "pooled_p50_ms": pct(pooled, 50),
        "pooled_p95_ms": pct(pooled, 95),
        "docker_run_p50_ms": pct(docker_run, 50),
        "pool_exec_per_s": throughput,
        "pool_acquire_p50_ms": pct(acquire, 50),
        "concurrent_callers": callers,
        "samples": samples,
        "local_python": python,
    }
    figures["pooled_over_subprocess"] = figures["pooled_p50_ms"] / figures["subprocess_p50_ms"]
    figures["docker_run_over_pooled"] = figures["docker_run_p50_ms"] / figures["pooled_p50_ms"]
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    image = build_base_image(log=lambda line: None)
    print(json.dumps(asyncio.run(measure(args.samples, args.seconds, image))))


if __name__ == "__main__":
    main()
