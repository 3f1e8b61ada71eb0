"""`rlaif eval` end to end against a real local vLLM server on the tiny model, through both SDKs.

The tiny model scores about zero: these tests prove the loop, the protocols, tool-call handling and
grading, not quality. To drive the tool path through the real server, one test makes the server emit a
tool call with vLLM's structured outputs; the text still goes through rlaif's parser and the sandbox.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from rlaif.env import GradeContext
from rlaif.policies.endpoints import OpenAIPolicy, Sampling
from rlaif.registry import load_environment
from rlaif.rollout.agent import run_episode
from rlaif.sandbox.base import Limits
from rlaif.sandbox.pool import SandboxPools
from rlaif.types import Trajectory
from rlaif_rewards.components import grade
from tests.support.fault_server import JudgeEndpoint, Reply

pytestmark = [pytest.mark.vllm, pytest.mark.docker]


def _eval(tmp_path, policy: str, *args: str, env: dict | None = None,
          returncode: int = 0) -> tuple[subprocess.CompletedProcess, dict, list]:
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "rlaif.cli", "eval", *args, "--policy", policy, "--out", str(out),
                           "--max-tokens", "24", "--concurrency", "4"],
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)
    assert done.returncode == returncode, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    lines = (out / "trajectories.jsonl").read_text().splitlines()
    trajectories = [Trajectory.model_validate_json(line) for line in lines]
    return done, summary, trajectories


def test_eval_through_the_openai_protocol(vllm_server, base_image, tmp_path):
    done, summary, trajectories = _eval(tmp_path, f"openai:{vllm_server}/v1:tiny", "pyfunc", "-n", "2", "--limit", "3")
    assert summary["graded"] == 6 and summary["skipped"] == {}
    assert set(summary) >= {"pass@1", "pass@2", "mean_reward", "tasks"} and summary["tasks"] == 3
    assert 0.0 <= summary["pass@1"] <= summary["pass@2"] <= 1.0
    for traj in trajectories:
        # One turn; a random model's text may parse as a malformed tool call, whose error the loop reports back.
        roles, extra = [m.role for m in traj.messages[:3]], traj.messages[3:]
        assert roles == ["system", "user", "assistant"], traj.messages
        assert all(m.role == "user" and m.content.startswith("Tool call error:") for m in extra), extra
        assert traj.reward.status in ("ok", "policy_error") and traj.reward.components["tests"] is not None
        assert set(traj.reward.details["tests"]["tests"]) == {f"case_{i}" for i in range(5)}
    assert "pass@1" in done.stdout and str(tmp_path / "out") in done.stdout


def test_eval_through_the_anthropic_protocol_without_leaking_the_key(vllm_server, base_image, tmp_path):
    secret = "sk-ant-local-" + "x" * 20
    done, summary, trajectories = _eval(tmp_path, "anthropic:tiny", "pyfunc", "--limit", "2",
                                        env={"ANTHROPIC_BASE_URL": vllm_server, "ANTHROPIC_API_KEY": secret})
    assert summary["graded"] == 2 and summary["policy"] == "anthropic:tiny"
    assert all(t.messages[-1].role == "assistant" and t.reward is not None for t in trajectories)
    written = (tmp_path / "out" / "trajectories.jsonl").read_text() + (tmp_path / "out" / "summary.json").read_text()
    assert secret not in written + done.stdout + done.stderr


def test_tool_calls_from_a_real_server_run_in_the_sandbox(vllm_server, base_image):
    regex = r'<tool_call>\n\{"name": "bash", "arguments": \{"command": "ls"\}\}\n</tool_call>'
    env = load_environment("repo_repair")
    task = env.tasks("test")[0]

    async def go():
        policy = OpenAIPolicy(f"{vllm_server}/v1", "tiny", extra_body={"structured_outputs": {"regex": regex}})
        async with SandboxPools(Limits(), size=1, run_id="eval-tools") as pools:
            traj, submission = await run_episode(env, task, policy, pools, Sampling(max_tokens=64), max_turns=2)
            reward = await grade(env, task, submission, GradeContext(pools))
        await policy.close()
        return traj, reward

    traj, reward = asyncio.run(go())
    assert traj.status == "truncated", "two turns, both tool calls: the turn budget ends it"
    assert [t.call.name for t in traj.tools] == ["bash", "bash"]
    top_level = sorted({path.split("/")[0] for path in task.data["repo"]})
    assert traj.tools[0].output.split() == top_level, "ls ran in the task's sandbox"
    assert [m.role for m in traj.messages[1:]] == ["user", "assistant", "tool", "assistant", "tool"]
    assert reward.status == "ok" and reward.total == 0.0, "the unfixed repository fails its FAIL_TO_PASS tests"


def test_a_down_endpoint_is_counted_as_skipped_never_scored(base_image, tmp_path):
    # It accepts connections (the preflight's check) and closes each without an answer, as a dying server does.
    with JudgeEndpoint(Reply(kind="hang")) as server:
        url = server.url
        done, summary, trajectories = _eval(tmp_path, f"openai:{url}/v1:tiny", "pyfunc", "--limit", "2",
                                            returncode=2)  # nothing graded: an error, after the summary is written
    assert done.stderr.strip().splitlines()[-1].startswith("error: every episode failed on infrastructure (2 of 2)")
    assert summary["graded"] == 0 and summary["pass@1"] is None
    assert summary["skipped"] == {f"episode: policy endpoint {url}/v1 failed: APIConnectionError: Connection error.": 2}
    assert all(t.status == "infra_error" and t.reward is None for t in trajectories)
    assert "Connection error" in trajectories[0].error
