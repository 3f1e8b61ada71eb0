"""The records that flow through rlaif: tasks, messages, trajectories, groups, rewards.

All are pydantic models, so `model_dump_json()` / `model_validate_json()` round-trip them exactly;
run directories store them as JSONL, one record per line. Token ids and logprobs on a `Turn` are the
ones vLLM sampled: the learner trains on them and never re-tokenises text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FailureKind = Literal["ok", "policy_error", "infra_error", "truncated"]
"""Why an episode or a reward ended as it did.

`ok`: it ran to the end. `policy_error`: the model's own doing (its code failed, timed out, ran out of
memory): a legitimate low reward. `infra_error`: something outside the model failed (sandbox died,
judge unreachable, unparseable verdict after retries): retried, then dropped and counted, never scored.
`truncated`: a context or turn budget was hit.
"""


class Record(BaseModel):
    """Base for every record: unknown fields are an error, so a typo in stored data cannot pass silently."""

    model_config = ConfigDict(extra="forbid")


class ToolCall(Record):
    """One call the model asked for, as parsed from its completion."""

    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class Message(Record):
    """One chat message, in the shape chat templates and chat APIs take."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    """For `role="tool"`: the id of the call this message answers."""


class Task(Record):
    """One problem of an environment. `data` holds what only that environment understands."""

    id: str
    env: str
    split: Literal["train", "test"] = "train"
    prompt: str
    reference: str | None = None
    """A reference answer or solution, when the environment has one."""
    data: dict[str, Any] = Field(default_factory=dict)


class Turn(Record):
    """One model turn, token-exact: what the engine saw and what it sampled."""

    prompt_ids: list[int]
    """The ids the engine saw before this turn's completion; for a turn that `continues`, only those after the
    previous turn's completion."""
    completion_ids: list[int]
    logprobs: list[float]
    """The sampling logprob of each completion token, from the behaviour policy."""
    loss_mask: list[int]
    """1 for each completion token the loss trains on, 0 for tokens it must ignore."""
    finish_reason: str | None = None
    continues: bool = False
    """True when this turn extends the previous turn's token sequence (the engine saw that turn's prompt and
    completion, then `prompt_ids`: the end of that turn, the tool results, the next generation prompt). An
    episode whose turns all continue is one sequence: trained as one sample, stored once."""

    @model_validator(mode="after")
    def _aligned(self) -> Turn:
        n = len(self.completion_ids)
        if len(self.logprobs) != n or len(self.loss_mask) != n:
            raise ValueError(
                f"a turn needs one logprob and one loss-mask entry per completion token: "
                f"{n} tokens, {len(self.logprobs)} logprobs, {len(self.loss_mask)} mask entries"
            )
        return self


class ToolRecord(Record):
    """One tool execution during an episode: what was asked, what came back, how it ended."""

    call: ToolCall
    output: str
    status: str = "ok"
    duration_s: float = 0.0


class RewardResult(Record):
    """A reward and its named components. `total` is None exactly when it could not be computed."""

    status: FailureKind = "ok"
    total: float | None = None
    components: dict[str, float | None] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict)
    """Per-test results, judge reasoning, usage: whatever explains the figure."""

    @model_validator(mode="after")
    def _no_silent_scores(self) -> RewardResult:
        if self.status == "infra_error" and self.total is not None:
            raise ValueError("an infra_error reward has no total: a failed grade is never a score")
        if self.status != "infra_error" and self.total is None:
            raise ValueError(f"a reward with status {self.status!r} needs a total")
        return self


class Trajectory(Record):
    """One episode of one task: the conversation, the exact tokens, the tool I/O, and how it ended."""

    id: str
    task_id: str
    group_id: str | None = None
    messages: list[Message] = Field(default_factory=list)
    turns: list[Turn] = Field(default_factory=list)
    tools: list[ToolRecord] = Field(default_factory=list)
    weight_version: int = 0
    """The policy weight version that generated every turn of this episode."""
    status: FailureKind = "ok"
    error: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    """Seconds per phase, e.g. `generate`, `tools`, `reward`."""
    reward: RewardResult | None = None

    def sequences(self) -> list[Turn]:
        """The episode as the token sequences the engine extended, one per turn that does not continue (one in all
        when every later turn continues). Each is a Turn whose completion is every id after its first prompt: the
        sampled ids as sampled, and between them the ids of each turn's end and the tool results, with logprob 0
        and loss mask 0 (the model did not choose them)."""
        out: list[Turn] = []
        for turn in self.turns:
            if not (turn.continues and out):
                out.append(turn.model_copy(update={"continues": False}, deep=True))
                continue
            last, gap = out[-1], len(turn.prompt_ids)
            out[-1] = last.model_copy(update={
                "completion_ids": last.completion_ids + turn.prompt_ids + turn.completion_ids,
                "logprobs": last.logprobs + [0.0] * gap + turn.logprobs,
                "loss_mask": last.loss_mask + [0] * gap + turn.loss_mask, "finish_reason": turn.finish_reason})
        return out

    def infra_error(self) -> str | None:
        """Why this trajectory cannot be scored (`episode: ...` or `grading: ...`), or None when it can: the
        episode or its reward hit an infrastructure failure, or it was never graded."""
        if self.status == "infra_error":
            return f"episode: {(self.error or 'infra_error')[:200]}"
        if self.reward is None or self.reward.status == "infra_error":
            details = self.reward.details if self.reward else {}
            notes = [d.get("error") or d.get("note") for d in details.values() if isinstance(d, dict)]
            return "grading: " + str(next((n for n in notes if n), "infra_error"))[:200]
        return None


class Group(Record):
    """The n trajectories of one task that GRPO compares with each other."""

    id: str
    task_id: str
    trajectories: list[Trajectory]


def final_answer(messages: Sequence[Message]) -> str:
    """The text of the last assistant message ("" when there is none): what single-turn graders score."""
    return next((m.content for m in reversed(messages) if m.role == "assistant"), "")
