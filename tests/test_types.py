"""The core records round-trip through JSON and refuse inconsistent states."""

import pytest
from pydantic import ValidationError

from rlaif.types import Group, Message, RewardResult, Task, ToolCall, ToolRecord, Trajectory, Turn

pytestmark = pytest.mark.unit


def _trajectory() -> Trajectory:
    call = ToolCall(id="c1", name="bash", arguments={"cmd": "ls -la", "nested": {"x": [1, 2]}})
    return Trajectory(
        id="t1",
        task_id="pyfunc/0",
        group_id="g1",
        messages=[
            Message(role="system", content="Be brief."),
            Message(role="user", content="Write add(a, b)."),
            Message(role="assistant", content="", tool_calls=[call]),
            Message(role="tool", content="a.py\n", tool_call_id="c1"),
            Message(role="assistant", content="```python\ndef add(a, b): return a + b\n```"),
        ],
        turns=[
            Turn(prompt_ids=[1, 2, 3], completion_ids=[4, 5], logprobs=[-0.5, -1.25], loss_mask=[1, 1]),
            Turn(prompt_ids=[1, 2, 3, 4, 5, 6], completion_ids=[7], logprobs=[-0.1], loss_mask=[1],
                 finish_reason="stop"),
        ],
        tools=[ToolRecord(call=call, output="a.py\n", duration_s=0.013)],
        weight_version=3,
        timings={"generate": 0.5, "tools": 0.02},
        reward=RewardResult(total=0.5, components={"tests": 0.5, "judge": None},
                            details={"tests": {"test_a": True, "test_b": False}}),
    )


def test_trajectory_round_trips_through_json_exactly():
    traj = _trajectory()
    again = Trajectory.model_validate_json(traj.model_dump_json())
    assert again == traj
    assert again.turns[0].logprobs == [-0.5, -1.25]
    assert again.messages[2].tool_calls[0].arguments["nested"] == {"x": [1, 2]}


def test_group_and_task_round_trip():
    group = Group(id="g1", task_id="pyfunc/0", trajectories=[_trajectory(), _trajectory()])
    assert Group.model_validate_json(group.model_dump_json()) == group
    task = Task(id="pyfunc/0", env="pyfunc", split="test", prompt="Write add.", reference="def add(a, b): ...",
                data={"tests": ["assert add(1, 2) == 3"]})
    assert Task.model_validate_json(task.model_dump_json()) == task


def test_turn_needs_one_logprob_and_mask_entry_per_token():
    with pytest.raises(ValidationError, match="one logprob"):
        Turn(prompt_ids=[1], completion_ids=[2, 3], logprobs=[-0.1], loss_mask=[1, 1])


def test_failed_reward_cannot_carry_a_score():
    with pytest.raises(ValidationError, match="never a score"):
        RewardResult(status="infra_error", total=0.0)
    with pytest.raises(ValidationError, match="needs a total"):
        RewardResult(status="ok")
    assert RewardResult(status="infra_error").total is None


def test_unknown_fields_in_stored_records_are_errors():
    with pytest.raises(ValidationError, match="extra"):
        Task.model_validate({"id": "x", "env": "e", "prompt": "p", "promt": "typo"})
