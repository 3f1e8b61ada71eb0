"""The agent loop: prompt -> model turn -> tool calls in the task's sandbox -> tool results -> ... -> end.

One function, `run_episode`, runs one task with one policy and returns a Trajectory with its
Submission (which `rlaif_rewards.components.grade` scores). The same loop serves the
student under training (in-process engine, token-exact turns) and any teacher endpoint.

How an episode ends (Trajectory.status):
- `ok`: the model answered without a tool call, or a tool said the episode is done (`submit`);
- `truncated`: the turn budget ran out while the model still called tools, or the last answer was cut off
  at the token limit (it is still graded; the trainer decides whether to mask it);
- `infra_error`: the policy endpoint or the sandbox failed. The episode is not graded and must be
  dropped and counted by the caller, never scored.
A malformed tool call, an unknown tool or bad arguments are the model's mistakes: it is told so in a
message and the episode goes on.
"""

from __future__ import annotations

import time
import uuid

from rlaif.env import Environment, Submission
from rlaif.policies.endpoints import Completion, Policy, PolicyError, Sampling
from rlaif.rollout.toolcalls import get_parser
from rlaif.sandbox.base import Sandbox, SandboxError
from rlaif.sandbox.pool import SandboxPools
from rlaif.types import Message, Task, ToolCall, ToolRecord, Trajectory


class EpisodeError(Exception):
    """Raised inside the loop for an infrastructure failure; turned into status `infra_error`."""


async def run_episode(
    env: Environment,
    task: Task,
    policy: Policy,
    pools: SandboxPools,
    sampling: Sampling,
    *,
    max_turns: int | None = None,
    parser: str = "hermes",
    group_id: str | None = None,
    weight_version: int = 0,
) -> tuple[Trajectory, Submission | None]:
    """Run one episode. The submission is None when the episode failed for infrastructure reasons."""
    parse = get_parser(parser)
    traj = Trajectory(id=uuid.uuid4().hex[:16], task_id=task.id, group_id=group_id, weight_version=weight_version)
    messages = env.prompt(task)
    tools = [t.as_openai() for t in env.tools(task)]
    turns = max_turns or env.max_turns
    timings = {"generate": 0.0, "tools": 0.0, "setup": 0.0}
    sandbox: Sandbox | None = None
    pool = pools.get(env.image_for(task)) if env.needs_sandbox(task) else None
    submission = None
    try:
        if pool is not None:
            start = time.monotonic()
            sandbox = await pool.acquire()
            await env.setup(task, sandbox)
            timings["setup"] = time.monotonic() - start
        status, history = "ok", []
        for turn_index in range(turns):
            start = time.monotonic()
            completion = await policy.complete(messages, tools, sampling, history)
            timings["generate"] += time.monotonic() - start
            if (turn := completion.turn) is not None:
                traj.turns.append(turn)
                history = (history if turn.continues else []) + turn.prompt_ids + turn.completion_ids
            message, errors = _assistant_message(completion, parse, turn_index)
            messages.append(message)
            if not message.tool_calls and not errors:
                status = "truncated" if completion.finish_reason == "length" else "ok"
                break
            messages.extend(Message(role="user", content=f"Tool call error: {e}") for e in errors)
            start = time.monotonic()
            done = await _run_tools(env, task, sandbox, message.tool_calls, messages, traj)
            timings["tools"] += time.monotonic() - start
            if done:
                break
        else:
            status = "truncated"
        submission = await env.submission(task, messages, sandbox)
    except (PolicyError, SandboxError, EpisodeError) as err:
        status, traj.error, submission = "infra_error", str(err), None
    finally:
        if sandbox is not None and pool is not None:
            await pool.release(sandbox)
    traj.messages, traj.status, traj.timings = messages, status, timings
    return traj, submission


def _assistant_message(completion: Completion, parse, turn_index: int) -> tuple[Message, list[str]]:
    if completion.tool_calls is not None:
        content, calls, errors = completion.text, completion.tool_calls, []
    else:
        content, calls, errors = parse(completion.text)
    calls = [c if c.id else c.model_copy(update={"id": f"call_{turn_index}_{i}"}) for i, c in enumerate(calls)]
    return Message(role="assistant", content=content, tool_calls=calls), errors


async def _run_tools(env: Environment, task: Task, sandbox: Sandbox | None, calls: list[ToolCall],
                     messages: list[Message], traj: Trajectory) -> bool:
    """Run each call in order; append results. Returns True when a tool ended the episode."""
    done = False
    for call in calls:
        start = time.monotonic()
        output = await env.call_tool(task, sandbox, call)
        if output.status == "infra_error":
            raise EpisodeError(f"task {task.id}: tool {call.name} hit an infrastructure failure: {output.output}")
        traj.tools.append(ToolRecord(call=call, output=output.output, status=output.status,
                                     duration_s=time.monotonic() - start))
        messages.append(Message(role="tool", content=output.output, tool_call_id=call.id))
        done = done or output.done
    return done
