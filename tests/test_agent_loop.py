"""The agent loop with scripted turns: malformed and unknown tool calls are the model's mistakes (told, not
crashed), the turn budget truncates, and infrastructure failures are infra_error, never a score."""

from __future__ import annotations

import asyncio

import pytest

from rlaif.env import GradeContext
from rlaif.eval.evaluation import evaluate, summarize
from rlaif.policies.endpoints import ReplayPolicy, Sampling
from rlaif.registry import load_environment
from rlaif.rollout.agent import run_episode
from rlaif.sandbox.base import Limits
from rlaif.sandbox.pool import SandboxPools
from rlaif.types import Message, ToolCall
from rlaif_rewards.components import grade

pytestmark = pytest.mark.docker


def _run(env, task, turns, max_turns=None):
    async def go():
        async with SandboxPools(Limits(), size=1, run_id="agent-loop") as pools:
            traj, submission = await run_episode(env, task, ReplayPolicy(turns), pools, Sampling(), max_turns=max_turns)
            reward = await grade(env, task, submission, GradeContext(pools)) if submission else None
            return traj, reward

    return asyncio.run(go())


def test_malformed_and_unknown_tool_calls_are_reported_to_the_model_and_the_episode_goes_on(base_image):
    env = load_environment("repo_repair")
    task = env.tasks("train")[0]
    fix = env.reference_turns(task)[0]
    turns = [
        Message(role="assistant", content='<tool_call>{"name": "bash", "arguments": {oops}</tool_call>'),
        Message(role="assistant", content='<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>'),
        Message(role="assistant", content='<tool_call>{"name": "read_file", "arguments": {"path": "../../etc/passwd"}}'
                                          "</tool_call>"),
        fix,
    ]
    traj, reward = _run(env, task, turns)
    roles = [m.role for m in traj.messages]
    assert roles[2:] == ["assistant", "user", "assistant", "tool", "assistant", "tool", "assistant"] + ["tool"] * len(
        fix.tool_calls)
    assert traj.messages[3].content.startswith("Tool call error: tool call 1 is not valid JSON")
    assert traj.messages[5].content.startswith("error: unknown tool 'rm_rf'")
    assert traj.messages[7].content == "error: ../../etc/passwd is outside the repository"
    assert traj.status == "ok" and traj.tools[-1].call.name == "submit"
    assert (reward.status, reward.total) == ("ok", 1.0)


def test_running_out_of_turns_truncates_and_is_still_graded(base_image):
    env = load_environment("repo_repair")
    task = env.tasks("train")[0]
    ls = ToolCall(id="c", name="bash", arguments={"command": "ls"})
    call = Message(role="assistant", content="", tool_calls=[ls])
    traj, reward = _run(env, task, [call] * 5, max_turns=3)
    assert traj.status == "truncated" and len(traj.tools) == 3
    assert reward.status == "ok" and reward.total == 0.0


def test_a_missing_image_is_an_infra_error_naming_the_image_and_the_run_goes_on(base_image):
    env = load_environment("pyfunc", {"generated": 3})
    tasks = env.tasks("train")[:2]
    tasks[0] = tasks[0].model_copy(update={"data": {**tasks[0].data, "image": "rlaif/no-such-image:1"}})

    async def go():
        async with SandboxPools(Limits(), size=1, run_id="agent-loop") as pools:
            return await evaluate(env, tasks, lambda t: ReplayPolicy(env.reference_turns(t)), GradeContext(pools),
                                  Sampling())

    broken, fine = asyncio.run(go())
    assert broken.reward.status == "infra_error" and broken.reward.total is None
    assert broken.infra_error() == ("grading: image rlaif/no-such-image:1 is not in the Docker engine; build it "
                                   "(`docker build -t rlaif/no-such-image:1 ...` FROM rlaif/base:latest) or tag one "
                                   "as it (`docker tag IMAGE rlaif/no-such-image:1`)")
    assert fine.reward.total == 1.0
    summary = summarize([broken, fine], 1)
    assert summary["graded"] == 1 and summary["pass@1"] == 1.0 and sum(summary["skipped"].values()) == 1
