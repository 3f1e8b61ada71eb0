"""The sandbox latency targets, as ratios measured side by side (never absolute times):
a pooled exec costs at most 2x a plain local process start, and is at least 5x faster than `docker run --rm`."""

import asyncio

import pytest

from tests.conftest import load_benchmark

pytestmark = pytest.mark.docker


def test_pooled_exec_is_near_a_process_start_and_far_below_docker_run(base_image):
    bench = load_benchmark("sandbox_latency")
    figures = asyncio.run(bench.measure(samples=30, seconds=2.0, image=base_image))
    assert figures["pooled_p50_ms"] <= 2 * figures["subprocess_p50_ms"], figures
    assert figures["docker_run_p50_ms"] >= 5 * figures["pooled_p50_ms"], figures
    assert figures["pool_exec_per_s"] > 0
