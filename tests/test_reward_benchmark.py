"""The reward-service benchmark, run small, as a guard on its mechanisms rather than a timing of them.

The targets (judge throughput within 0.8 of the rate limit, 5,000 cached verdicts/s) are measured by
`benchmarks/reward_service.py` and quoted in the README. On a shared 2-core machine a timed assertion near a
target flakes (0.793 was seen in CI), so this test keeps margins that only a broken mechanism misses: calls
that stopped overlapping would give 2 verdicts/s against a floor of 32, and a cache that missed would give
fewer than 64/s against a floor of 1,000."""

import asyncio
import json

import pytest

from tests.conftest import load_benchmark
from tests.support.fault_server import JudgeEndpoint, Reply

pytestmark = pytest.mark.unit


def test_judge_throughput_is_near_the_limit_and_the_cache_is_fast(tmp_path):
    bench = load_benchmark("reward_service")
    reply = Reply(text=json.dumps({"score": 1, "reason": "correct"}), delay_s=bench.LATENCY_S)
    with JudgeEndpoint(reply) as endpoint:
        figures = asyncio.run(bench.measure(320, tmp_path / "cache.sqlite", endpoint.url))
    assert figures["verdicts_per_s"] >= 0.5 * figures["limit_per_s"], figures
    assert figures["cached_verdicts_per_s"] >= 1000, figures
