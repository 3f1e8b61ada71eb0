"""Reward-service judge throughput: 1,000 pointwise verdicts from a judge endpoint that answers after a fixed
500 ms, at concurrency 32 under a 64 requests/s limit; then the same 1,000 again, from the cache.

The endpoint is a local server behind the real `openai` SDK (tests.support.fault_server). The first pass is
bounded by the limit (64/s) and the endpoint's latency (32 in flight / 0.5 s = 64/s); what the judge adds on
top is `p95_overhead_ms`: a call's time minus the endpoint's own 500 ms.

Prints one JSON object. Usage: python benchmarks/reward_service.py [--verdicts 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rlaif.core.config import JudgeConfig
from rlaif.types import Task
from rlaif_rewards.judge import Judge

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the fault server lives in tests/support
from tests.support.fault_server import JudgeEndpoint, Reply

LATENCY_S = 0.5
CONCURRENCY = 32
LIMIT_PER_S = 64


async def measure(verdicts: int, cache_path: Path, url: str) -> dict:
    config = JudgeConfig(endpoint=f"openai:{url}/v1:bench-judge", concurrency=CONCURRENCY, rpm=LIMIT_PER_S * 60,
                         cache=str(cache_path), retries=2)
    judge = Judge(config)
    task = Task(id="bench", env="bench", prompt="Explain what `def f(x): return x + 1` does.", reference="x plus 1")
    answers = [f"It returns its argument plus one (variant {i})." for i in range(verdicts)]
    latencies: list[float] = []
    queue = list(answers)

    async def caller() -> None:
        while queue:
            answer = queue.pop()
            start = time.perf_counter()
            result = await judge.score(task, answer)
            latencies.append(time.perf_counter() - start)
            assert result.status == "ok", result

    try:
        start = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))
        first = time.perf_counter() - start
        calls = judge.stats["calls"]
        start = time.perf_counter()
        cached = await asyncio.gather(*(judge.score(task, a) for a in answers))
        second = time.perf_counter() - start
    finally:
        await judge.close()
    assert all(r.details["cached"] for r in cached) and judge.stats["calls"] == calls == verdicts
    overhead = [(t - LATENCY_S) * 1000 for t in latencies]
    return {
        "verdicts": verdicts,
        "verdicts_per_s": round(verdicts / first, 2),
        "limit_per_s": LIMIT_PER_S,
        "ratio_to_limit": round(verdicts / first / LIMIT_PER_S, 3),
        "cached_verdicts_per_s": round(verdicts / second, 1),
        "p95_overhead_ms": round(statistics.quantiles(overhead, n=100)[94], 2),
        "p50_overhead_ms": round(statistics.median(overhead), 2),
        "endpoint_latency_ms": LATENCY_S * 1000,
        "concurrency": CONCURRENCY,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verdicts", type=int, default=1000)
    args = parser.parse_args()
    reply = Reply(text=json.dumps({"score": 1, "reason": "correct"}), delay_s=LATENCY_S)
    with tempfile.TemporaryDirectory() as tmp, JudgeEndpoint(reply) as endpoint:
        figures = asyncio.run(measure(args.verdicts, Path(tmp) / "cache.sqlite", endpoint.url))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
