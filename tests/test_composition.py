"""A task's reward is a weighted sum of named components, each kept; config adds components to any environment,
and a gated component (the judge, gated on the tests) runs only when its gate passed."""

from __future__ import annotations

import asyncio
import json

import pytest

from rlaif.core.config import ComponentConfig, JudgeConfig
from rlaif.env import GradeContext
from rlaif.eval.evaluation import evaluate
from rlaif.policies.endpoints import ReplayPolicy, Sampling
from rlaif.registry import load_environment
from rlaif.sandbox.base import Limits
from rlaif.sandbox.pool import SandboxPools
from rlaif.types import Message
from rlaif_rewards.judge import Judge
from tests.support.fault_server import JudgeEndpoint, Reply

pytestmark = pytest.mark.docker


def test_judge_gated_on_tests_plus_format_and_length(base_image):
    env = load_environment("pyfunc", {"generated": 4})
    task = env.tasks("train")[0]
    right = env.reference_turns(task)[0].content
    wrong = f"```python\ndef {task.data['entry_point']}(*args):\n    return None\n```"
    components = [
        ComponentConfig(kind="judge", weight=2.0, gate="tests"),
        ComponentConfig(kind="format", pattern=r"```python\n", weight=1.0),
        ComponentConfig(kind="length", max_chars=40, weight=1.0),
    ]

    async def grade_twice(endpoint_url: str, answer: str):
        judge = Judge(JudgeConfig(endpoint=f"openai:{endpoint_url}/v1:judge", cache=None))
        try:
            async with SandboxPools(Limits(), size=2, run_id="composition") as pools:
                ctx = GradeContext(pools, {"default": judge}, components)
                replay = lambda t: ReplayPolicy([Message(role="assistant", content=answer)])  # noqa: E731
                return await evaluate(env, [task, task], replay, ctx, Sampling(), concurrency=1)
        finally:
            await judge.close()

    with JudgeEndpoint(Reply(text=json.dumps({"score": 0.5, "reason": "fine"}))) as endpoint:
        good, good_again = asyncio.run(grade_twice(endpoint.url, right))
        calls_after_good = len(endpoint.requests)
        bad, _ = asyncio.run(grade_twice(endpoint.url, wrong))
        calls_after_bad = len(endpoint.requests)

    length = max(0.0, 1 - max(0, len(right) - 40) / 40)
    assert good.reward.components == {"tests": 1.0, "judge": 0.5, "format": 1.0, "length": pytest.approx(length)}
    assert good.reward.total == pytest.approx((1.0 + 2 * 0.5 + 1.0 + length) / 5)
    assert bad.reward.components["tests"] == 0.0 and bad.reward.components["judge"] == 0.0
    assert bad.reward.details["judge"] == {"gated": "tests below 1.0"}
    assert good_again.reward.details["judge"]["cached"], "the same answer again is a cache hit"
    assert calls_after_good == 1 and calls_after_bad == 1, "the gated judge made no call for failing code"
