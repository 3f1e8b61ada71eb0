"""The learner's math: GRPO-family advantages and policy losses as pure functions over torch tensors.

Checked number for number against TRL 1.16 `GRPOTrainer` (tests/test_loss_trl_parity.py).

Advantages (`group_advantages`, TRL `scale_rewards`): A = r - mean of the prompt's group, then
- "group": divided by (group std + eps), the std unbiased (Bessel), eps=1e-4 outside the root (GRPO, DeepSeekMath);
- "batch": divided by (std of the whole batch + eps), still centred on the group mean (PPO Lite / TRL "batch");
- "none": not divided (Dr. GRPO: std scaling adds a question-difficulty bias).

Policy loss (`policy_loss`): per token the clipped surrogate
-min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A), ratio = pi / pi_old; eps_high > eps_low is DAPO's
"clip-higher" (the DAPO paper uses 0.2 / 0.28). Variants differ in the ratio and in how token losses become a scalar:
- "grpo": mean over each sequence's tokens, then over sequences (GRPO paper; TRL loss_type="grpo").
- "dr_grpo": sum over all tokens / (B * max_completion_length), a constant (Dr. GRPO; TRL loss_type="dr_grpo").
- "dapo": sum over all tokens / number of tokens (DAPO's token-level loss; TRL loss_type="dapo", TRL's default).
  TRL divides by the token count of the whole generation batch across processes and accumulation steps; in one call
  on one process that is this batch's token count, which is what this function uses.
- "gspo": one ratio per sequence, exp(mean over its tokens of (logprobs - old_logprobs)), clipped per sequence, and
  reduced as "grpo" (GSPO paper; TRL importance_sampling_level="sequence" with loss_type="grpo", the pairing TRL
  recommends). TRL differentiates the sequence ratio directly, no stop-gradient; with one advantage per sequence and
  no per-token TIS weight this equals the paper's GSPO-token stop-gradient form in value and gradient. GSPO clips far
  tighter than GRPO (paper: eps_low 3e-4, eps_high 4e-4).

Optional terms, in TRL's order (TIS weights the surrogate, then the KL term is added):
- KL to a reference policy with coefficient beta: the k3 estimator exp(ref - lp) - (ref - lp) - 1 per token (TRL beta
  with use_bias_correction_kl=False; TRL's default, True, also multiplies it by the ratio pi / pi_old, which changes
  its gradient even on-policy).
- Truncated importance sampling (TIS) for the sampler mismatch: per-token weight min(exp(old - behaviour), tis_cap),
  detached, where behaviour_logprobs are the sampler's (vLLM's) logprobs. TRL: use_vllm=True,
  vllm_importance_sampling_correction=True, vllm_importance_sampling_mode="token_truncate",
  vllm_importance_sampling_clip_max=tis_cap, clip_min=None (TRL's defaults are "sequence_mask" and 3.0).
  A NaN behaviour logprob (vLLM could not score the token) gets weight 1, as in TRL.

Values at masked positions are ignored, even inf or NaN, and receive zero gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

VARIANTS = ("grpo", "dr_grpo", "dapo", "gspo")
SCALES = ("group", "batch", "none")


def group_advantages(rewards: Tensor, group_size: int, scale: str = "group", eps: float = 1e-4) -> Tensor:
    """Group-relative advantages for `rewards` (n,), laid out group by group (n = groups * group_size)."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if rewards.dim() != 1 or group_size < 2 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be 1-D with a multiple of group_size >= 2 entries, got {tuple(rewards.shape)}")
    grouped = rewards.view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale == "group":
        centred = centred / (grouped.std(dim=1, keepdim=True) + eps)
    elif scale == "batch":
        centred = centred / (rewards.std() + eps)
    return centred.reshape(-1)


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of (B, T) x over the masked tokens; of (B, 1) x (one value per sequence), over sequences, as TRL logs it."""
    if x.shape != mask.shape:
        return x.mean()
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    variant: str = "grpo",
    eps_low: float = 0.2,
    eps_high: float | None = None,
    max_completion_length: int | None = None,
    ref_logprobs: Tensor | None = None,
    beta: float = 0.0,
    behaviour_logprobs: Tensor | None = None,
    tis_cap: float | None = 2.0,
) -> tuple[Tensor, dict[str, float]]:
    """Scalar loss and metrics for (B, T) `logprobs` (current policy, with grad), `old_logprobs` (the policy that
    generated), (B,) `advantages` and (B, T) `mask` (1 on trained completion tokens).

    `ref_logprobs` are needed when beta > 0 (and give a "kl" metric whenever passed). TIS is applied when
    `behaviour_logprobs` are given and `tis_cap` is not None.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if variant == "dr_grpo" and max_completion_length is None:
        raise ValueError("variant 'dr_grpo' needs max_completion_length")
    if beta and ref_logprobs is None:
        raise ValueError("beta > 0 needs ref_logprobs")
    if logprobs.dim() != 2 or old_logprobs.shape != logprobs.shape or mask.shape != logprobs.shape:
        raise ValueError("logprobs, old_logprobs and mask must all be (B, T)")
    if advantages.shape != logprobs.shape[:1]:
        raise ValueError(f"advantages must be (B,) = ({logprobs.size(0)},), got {tuple(advantages.shape)}")
    eps_high = eps_low if eps_high is None else eps_high
    keep = mask.bool()
    weights = keep.to(logprobs.dtype)

    log_ratio = torch.where(keep, logprobs - old_logprobs.detach(), 0.0)
    if variant == "gspo":
        log_ratio = (log_ratio.sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)).unsqueeze(1)  # (B, 1)
    ratio = torch.exp(log_ratio)
    adv = advantages.detach().unsqueeze(1)
    token_loss = -torch.min(ratio * adv, ratio.clamp(1 - eps_low, 1 + eps_high) * adv)

    metrics: dict[str, float] = {}
    if behaviour_logprobs is not None and tis_cap is not None:
        sampler_gap = torch.where(keep, old_logprobs - behaviour_logprobs, 0.0).detach()
        tis_weight = torch.exp(torch.nan_to_num(sampler_gap, nan=0.0)).clamp(max=tis_cap)
        token_loss = token_loss * tis_weight
        metrics["tis_weight_mean"] = _masked_mean(tis_weight, weights).item()
    if ref_logprobs is not None:
        ref_gap = torch.where(keep, ref_logprobs.detach() - logprobs, 0.0)
        token_kl = torch.exp(ref_gap) - ref_gap - 1
        if beta:
            token_loss = token_loss + beta * token_kl
        metrics["kl"] = _masked_mean(token_kl.detach(), weights).item()

    token_loss = token_loss.expand_as(weights) * weights
    if variant in ("grpo", "gspo"):
        loss = (token_loss.sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)).mean()
    elif variant == "dr_grpo":
        loss = token_loss.sum() / (logprobs.size(0) * max_completion_length)
    else:
        loss = token_loss.sum() / weights.sum().clamp(min=1.0)

    with torch.no_grad():
        low = (ratio < 1 - eps_low) & (adv < 0)
        high = (ratio > 1 + eps_high) & (adv > 0)
        metrics["clip_frac_low"] = _masked_mean(low.to(weights.dtype), weights).item()
        metrics["clip_frac_high"] = _masked_mean(high.to(weights.dtype), weights).item()
        metrics["clip_frac"] = _masked_mean((low | high).to(weights.dtype), weights).item()
        metrics["ratio_mean"] = _masked_mean(ratio, weights).item()
    return loss, metrics
