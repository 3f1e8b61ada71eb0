"""From scored groups to the learner's samples: group-relative advantages, one sample per model turn."""

from __future__ import annotations

import torch

from rlaif.train.groups import ScoredGroup
from rlaif.train.learner import Sample
from rlaif.train.loss import group_advantages


def build_samples(batch: list[ScoredGroup], group_size: int, *, scale_rewards: bool,
                  mask_truncated: bool) -> list[Sample]:
    """Every turn of every episode, with its episode's advantage; a truncated episode's loss mask is zeroed
    when `mask_truncated`. Turns without completion tokens are left out."""
    if not batch:
        return []
    trajectories = [t for g in batch for t in g.trajectories]
    rewards = torch.tensor([t.reward.total for t in trajectories], dtype=torch.float32)
    advantages = group_advantages(rewards, group_size, scale="group" if scale_rewards else "none").tolist()
    samples = []
    for traj, advantage in zip(trajectories, advantages, strict=True):
        masked = mask_truncated and traj.status == "truncated"
        for turn in traj.turns:
            mask = [0] * len(turn.loss_mask) if masked else turn.loss_mask
            samples.append(Sample(turn.prompt_ids, turn.completion_ids, turn.logprobs, mask, advantage))
    return [s for s in samples if s.completion_ids]
