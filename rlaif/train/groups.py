"""A finished GRPO group as the trainer holds it, and why one is dropped instead of trained.

A group is dropped, never trained on, when any episode or reward hit an infrastructure failure
(`infra_error`: a failure outside the model is never a score), or, with dynamic sampling, when every reward
is equal (no signal: all advantages would be 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlaif.types import Trajectory


@dataclass
class ScoredGroup:
    """A finished group: its task's position in the data stream, the oldest weight version it used."""

    index: int
    version: int
    trajectories: list[Trajectory]

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "version": self.version,
                "trajectories": [t.model_dump(mode="json") for t in self.trajectories]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScoredGroup:
        return cls(data["index"], data["version"], [Trajectory.model_validate(t) for t in data["trajectories"]])

    def infra_error(self) -> str | None:
        """The first infrastructure failure among its episodes and rewards, or None."""
        return next((e for e in (t.infra_error() for t in self.trajectories) if e is not None), None)

    def drop_reason(self, dynamic_sampling: bool) -> str | None:
        """`infra_error`, `no_signal` (all rewards equal, with dynamic sampling), or None to train it."""
        if self.infra_error() is not None:
            return "infra_error"
        if dynamic_sampling and len({t.reward.total for t in self.trajectories}) == 1:
            return "no_signal"
        return None
