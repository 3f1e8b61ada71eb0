"""The reward-service targets, measured in a smaller run of the benchmark: judge throughput within 0.8 of the
rate limit, and at least 5,000 cached verdicts per second."""

import asyncio
import json

import pytest

from rlaif_rewards.fault_server import JudgeEndpoint, Reply
from tests.conftest import load_benchmark

pytestmark = pytest.mark.unit


def test_judge_throughput_is_near_the_limit_and_the_cache_is_fast(tmp_path):
    bench = load_benchmark("reward_service")
    reply = Reply(text=json.dumps({"score": 1, "reason": "correct"}), delay_s=bench.LATENCY_S)
    with JudgeEndpoint(reply) as endpoint:
        figures = asyncio.run(bench.measure(320, tmp_path / "cache.sqlite", endpoint.url))
    assert figures["verdicts_per_s"] >= 0.8 * figures["limit_per_s"], figures
    assert figures["cached_verdicts_per_s"] >= 5000, figures
