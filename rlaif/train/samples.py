"""From scored groups to the learner's samples: group-relative advantages, one sample per episode.

A multi-turn episode is one sequence (`Trajectory.sequences`): its first prompt, then every model turn with the
tool results between them masked out, so the loss is normalised per episode (a long episode does not weigh more
than a short one under `grpo`, and `dr_grpo`'s constant stays `rollout.max_tokens`), and the history is scored
once, not once per turn. Only a turn whose prompt did not extend the previous turn's sequence (a chat template
that rewrites its history) starts a sample of its own."""

from __future__ import annotations

import torch

from rlaif.train.groups import ScoredGroup
from rlaif.train.learner import Sample
from rlaif.train.loss import group_advantages


def build_samples(batch: list[ScoredGroup], group_size: int, *, scale_rewards: bool,
                  mask_truncated: bool) -> list[Sample]:
    """Every episode's sequences, with its advantage; a truncated episode's loss mask is zeroed when
    `mask_truncated`. Sequences without completion tokens are left out."""
    if not batch:
        return []
    trajectories = [t for g in batch for t in g.trajectories]
    rewards = torch.tensor([t.reward.total for t in trajectories], dtype=torch.float32)
    advantages = group_advantages(rewards, group_size, scale="group" if scale_rewards else "none").tolist()
    samples = []
    for traj, advantage in zip(trajectories, advantages, strict=True):
        masked = mask_truncated and traj.status == "truncated"
        for seq in traj.sequences():
            mask = [0] * len(seq.loss_mask) if masked else seq.loss_mask
            samples.append(Sample(seq.prompt_ids, seq.completion_ids, seq.logprobs, mask, advantage))
    return [s for s in samples if s.completion_ids]
