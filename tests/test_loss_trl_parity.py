"""rlaif.train.loss against TRL 1.16's GRPOTrainer, number for number, plus plain unit tests of the loss.

What of TRL runs, unmodified, in the `trl_parity` tests: the `GRPOTrainer` methods `_generate_and_score_completions`
(padding, old / reference logprobs, the vLLM importance-sampling ratio, group advantages, the token count),
`_compute_loss` (the whole loss) and `_get_per_token_logps_and_entropies` (with its profiling decorator), called unbound
on a stand-in object; the config is a real `GRPOConfig`, and the stand-in copies from it the attributes
`GRPOTrainer.__init__` copies. Also real: `trl.trainer.utils` (nanstd, nanmin, nanmax, pad), accelerate's
`gather_object` and TRL's `disable_gradient_checkpointing`.

What is stubbed:
- the models: `_TokenLogitsModel` holds one free logit vector per completion position and answers TRL's call
  `model(input_ids=..., attention_mask=..., labels=..., fused_lm_head=True)` with `.log_probs` and `.entropy` (the
  log-softmax of its logits at the completion tokens). The current, old and reference policies are three of them.
- `_generate` returns fixed prompt / completion ids (and, for TIS, fixed sampler logprobs as vLLM would);
  `_calculate_rewards` returns fixed rewards (one reward function).
- `accelerator`: one process on the CPU (gather / reduce are identity, autocast a null context).
- trainer state set to its single-process values: `current_gradient_accumulation_steps=1`, `aux_loss_enabled=False`,
  `_metrics` / `_logs` / `_pending_*` buffers, `reward_func_names`, `reward_weights`, `_tokenizer.pad_token_id`, and no
  environments or tools.
num_iterations=2 makes TRL compute old logprobs (from the old-policy model) rather than reuse the current ones.
Gradients are compared w.r.t. the current policy's logits; rlaif computes its logprobs from the same logits.
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict, deque
from types import MethodType, SimpleNamespace

import pytest
import torch

from rlaif.train.loss import group_advantages, policy_loss

pytestmark = pytest.mark.unit

G, B, C, V = 4, 8, 6, 11  # group size, completions (2 prompts), longest completion, vocabulary
MAX_LEN = 8  # max_completion_length: longer than any completion, so dr_grpo's constant is not the padded width
LENGTHS = [6, 3, 5, 1, 6, 2, 4, 6]
PROMPT_LENGTHS = [3, 3, 3, 3, 2, 2, 2, 2]
PAD = 0
TIS_CAP = 2.0
TOL = {"atol": 1e-5, "rtol": 0.0}


@pytest.fixture(scope="module")
def trl_grpo():
    """(GRPOConfig, GRPOTrainer); imported here so collecting other tests never pays TRL's (and vLLM's) import."""
    from trl import GRPOConfig, GRPOTrainer

    return GRPOConfig, GRPOTrainer


def _token_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits, dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)


class _TokenLogitsModel(torch.nn.Module):
    is_gradient_checkpointing = False

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = torch.nn.Parameter(logits.clone())

    def forward(self, input_ids, attention_mask, labels, fused_lm_head):
        logp = torch.log_softmax(self.logits, dim=-1)
        token_lp = logp.gather(-1, input_ids[:, -C:].unsqueeze(-1)).squeeze(-1)
        entropy = -(logp.exp() * logp).sum(-1)
        prompt = token_lp.new_zeros(input_ids.size(0), input_ids.size(1) - C)
        return SimpleNamespace(log_probs=torch.cat([prompt, token_lp], 1), entropy=torch.cat([prompt, entropy], 1))


def _batch(seed: int = 0) -> SimpleNamespace:
    gen = torch.Generator().manual_seed(seed)
    completions = [torch.randint(1, V, (n,), generator=gen).tolist() for n in LENGTHS]
    ids = torch.full((B, C), PAD)
    mask = torch.zeros(B, C)
    for i, tokens in enumerate(completions):
        ids[i, : len(tokens)] = torch.tensor(tokens)
        mask[i, : len(tokens)] = 1
    logits = torch.randn(B, C, V, generator=gen)
    old_logits = logits + 0.5 * torch.randn(B, C, V, generator=gen)
    ref_logits = logits + 0.5 * torch.randn(B, C, V, generator=gen)
    behaviour = _token_logprobs(old_logits, ids) + 0.6 * torch.randn(B, C, generator=gen)
    return SimpleNamespace(
        prompts=[torch.randint(1, V, (n,), generator=gen).tolist() for n in PROMPT_LENGTHS],
        completions=completions,
        ids=ids,
        mask=mask,
        logits=logits,
        old_logits=old_logits,
        ref_logits=ref_logits,
        behaviour=behaviour * mask,  # TRL pads the sampler's logprobs with 0
        behaviour_lists=[behaviour[i, :n].tolist() for i, n in enumerate(LENGTHS)],
        rewards=torch.randn(B, generator=gen),
    )


def _stand_in(trl_grpo, args, batch: SimpleNamespace, old_model, ref_model) -> SimpleNamespace:
    """Exactly the attributes GRPOTrainer's three methods read on the paths tested here (drop any one and some case
    fails), the config-derived ones set as GRPOTrainer.__init__ sets them from `args`."""
    _, trainer = trl_grpo
    n = len(batch.completions)
    sampler = batch.behaviour_lists if args.use_vllm else None
    s = SimpleNamespace(
        args=args,
        model=old_model,
        ref_model=ref_model,
        accelerator=SimpleNamespace(
            device=torch.device("cpu"), process_index=0, num_processes=1, is_main_process=True,
            gather=lambda t: t, reduce=lambda t, reduction: t, autocast=contextlib.nullcontext,
        ),
        loss_type=args.loss_type,
        epsilon_low=args.epsilon,
        epsilon_high=args.epsilon_high if args.epsilon_high is not None else args.epsilon,
        beta=args.beta,
        importance_sampling_level=args.importance_sampling_level,
        max_completion_length=args.max_completion_length,
        scale_rewards=args.scale_rewards,
        multi_objective_aggregation=args.multi_objective_aggregation,
        num_generations=args.num_generations,
        num_iterations=args.num_iterations,
        use_vllm=args.use_vllm,
        vllm_importance_sampling_correction=args.vllm_importance_sampling_correction,
        vllm_importance_sampling_mode=args.vllm_importance_sampling_mode,
        vllm_importance_sampling_clip_max=args.vllm_importance_sampling_clip_max,
        vllm_importance_sampling_clip_min=args.vllm_importance_sampling_clip_min,
        mask_truncated_completions=args.mask_truncated_completions,
        pad_to_multiple_of=args.pad_to_multiple_of,
        top_entropy_quantile=args.top_entropy_quantile,
        off_policy_mask_threshold=args.off_policy_mask_threshold,
        _entropy_bonus_enabled=args.entropy_coef != 0.0 or args.use_adaptive_entropy,
        current_gradient_accumulation_steps=1,
        aux_loss_enabled=False,
        reward_func_names=["reward"],
        reward_weights=torch.ones(1),
        environment_factories=None,
        environments=None,
        tools=None,
        _tokenizer=SimpleNamespace(pad_token_id=PAD),
        _metrics={"train": defaultdict(list)},
        _logs={"prompt": deque(), "completion": deque(), "advantages": deque(), "rewards": defaultdict(deque),
               "extra": defaultdict(deque)},
        _pending_extra_logs=defaultdict(list),
        _pending_metrics=defaultdict(list),
        _generate=lambda prompts: (batch.prompts, batch.completions, None, ["c"] * n, sampler, {}, None, []),
        _calculate_rewards=lambda inputs, prompts, completions, ids: batch.rewards.unsqueeze(1).clone(),
    )
    for name in ("_generate_and_score_completions", "_compute_loss", "_get_per_token_logps_and_entropies"):
        setattr(s, name, MethodType(getattr(trainer, name), s))
    return s


def _trl_config(trl_grpo, tmp_path, **overrides):
    config, _ = trl_grpo
    settings = {
        "output_dir": str(tmp_path), "report_to": [], "use_cpu": True,
        "num_generations": G, "per_device_train_batch_size": B, "num_iterations": 2, "max_completion_length": MAX_LEN,
        **overrides,
    }
    return config(**settings)


def _trl_settings(variant: str, eps_low: float, eps_high: float | None, beta: float, tis: bool, scale: str) -> dict:
    """The GRPOConfig that makes TRL compute what `policy_loss(variant=..., ...)` computes."""
    settings = {
        "loss_type": "grpo" if variant == "gspo" else variant,
        "importance_sampling_level": "sequence" if variant == "gspo" else "token",
        "epsilon": eps_low, "epsilon_high": eps_high, "beta": beta, "use_bias_correction_kl": False,
        "scale_rewards": scale,
    }
    if tis:
        settings.update(use_vllm=True, vllm_importance_sampling_correction=True,
                        vllm_importance_sampling_mode="token_truncate", vllm_importance_sampling_clip_max=TIS_CAP)
    return settings


CASES = [  # variant, eps_low, eps_high, beta, tis, scale
    pytest.param("grpo", 0.2, None, 0.0, False, "group", id="grpo"),
    pytest.param("dr_grpo", 0.2, None, 0.0, False, "none", id="dr_grpo"),
    pytest.param("dapo", 0.2, 0.28, 0.0, False, "group", id="dapo"),
    pytest.param("gspo", 0.05, 0.08, 0.0, False, "group", id="gspo"),
    pytest.param("grpo", 0.2, None, 0.05, False, "batch", id="grpo-kl"),
    pytest.param("dr_grpo", 0.2, 0.28, 0.05, True, "none", id="dr_grpo-kl-tis"),
    pytest.param("dapo", 0.2, 0.28, 0.0, True, "group", id="dapo-tis"),
    pytest.param("dapo", 0.2, 0.28, 0.05, True, "batch", id="dapo-kl-tis"),
    pytest.param("gspo", 0.05, 0.08, 0.05, True, "group", id="gspo-kl-tis"),
]


def _run_both(trl_grpo, tmp_path, variant, eps_low, eps_high, beta, tis, scale):
    batch = _batch()
    args = _trl_config(trl_grpo, tmp_path, **_trl_settings(variant, eps_low, eps_high, beta, tis, scale))
    current = _TokenLogitsModel(batch.logits)
    trainer = _stand_in(trl_grpo, args, batch, _TokenLogitsModel(batch.old_logits), _TokenLogitsModel(batch.ref_logits))
    inputs = trainer._generate_and_score_completions([{"prompt": "p"}] * B)
    trl_loss = trainer._compute_loss(current, inputs)
    trl_loss.backward()
    trl = SimpleNamespace(loss=trl_loss.detach(), grad=current.logits.grad, inputs=inputs,
                          metrics={k: v[-1] for k, v in trainer._metrics["train"].items()})

    logits = batch.logits.clone().requires_grad_(True)
    advantages = group_advantages(batch.rewards, G, scale=scale)
    loss, metrics = policy_loss(
        _token_logprobs(logits, batch.ids), _token_logprobs(batch.old_logits, batch.ids), advantages, batch.mask,
        variant=variant, eps_low=eps_low, eps_high=eps_high, max_completion_length=MAX_LEN,
        ref_logprobs=_token_logprobs(batch.ref_logits, batch.ids), beta=beta,
        behaviour_logprobs=batch.behaviour if tis else None, tis_cap=TIS_CAP,
    )
    loss.backward()
    ours = SimpleNamespace(loss=loss.detach(), grad=logits.grad, advantages=advantages, metrics=metrics)
    return batch, trl, ours


@pytest.mark.parametrize(("variant", "eps_low", "eps_high", "beta", "tis", "scale"), CASES)
def test_loss_and_grad_trl_parity(trl_grpo, tmp_path, variant, eps_low, eps_high, beta, tis, scale):
    batch, trl, ours = _run_both(trl_grpo, tmp_path, variant, eps_low, eps_high, beta, tis, scale)
    # TRL padded the same batch the same way, so both sides score the same tokens
    assert torch.equal(trl.inputs["completion_ids"], batch.ids)
    assert torch.equal(trl.inputs["completion_mask"].float(), batch.mask)
    torch.testing.assert_close(ours.advantages, trl.inputs["advantages"], **TOL)
    torch.testing.assert_close(ours.loss, trl.loss, **TOL)
    torch.testing.assert_close(ours.grad, trl.grad, **TOL)
    assert ours.grad.abs().max() > 1e-3  # the comparison is not between two zero gradients

    # the metrics TRL logs for the same quantities
    assert 0 < trl.metrics["clip_ratio/region_mean"] < 1  # the batch clips some tokens (or sequences), not all
    for ours_key, trl_key in [("clip_frac", "region_mean"), ("clip_frac_low", "low_mean"),
                              ("clip_frac_high", "high_mean")]:
        assert ours.metrics[ours_key] == pytest.approx(trl.metrics[f"clip_ratio/{trl_key}"], abs=1e-6)
    if beta:
        assert ours.metrics["kl"] == pytest.approx(trl.metrics["kl"], abs=1e-6)
    if tis:
        assert ours.metrics["tis_weight_mean"] == pytest.approx(
            trl.metrics["sampling/importance_sampling_ratio/mean"], abs=1e-6)
        assert trl.inputs["importance_sampling_ratio"][batch.mask.bool()].max() == TIS_CAP  # the cap is reached


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_advantages_trl_parity(trl_grpo, tmp_path, scale):
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5, 3.0, -1.0, 0.25, 2.0])  # a zero-std group too
    n = rewards.numel()
    batch = SimpleNamespace(prompts=[[1]] * n, completions=[[2]] * n, rewards=rewards)
    args = _trl_config(trl_grpo, tmp_path, per_device_train_batch_size=n, num_iterations=1, scale_rewards=scale)
    trainer = _stand_in(trl_grpo, args, batch, _TokenLogitsModel(torch.zeros(n, 1, V)), None)
    expected = trainer._generate_and_score_completions([{"prompt": "p"}] * n)["advantages"]
    torch.testing.assert_close(group_advantages(rewards, G, scale=scale), expected, **TOL)


# ---- plain unit tests ----


def _one_token_each(ratios: list[float], advantages: list[float], **kwargs):
    """policy_loss on sequences of one token each, with the given ratios pi / pi_old; returns (loss, grad, metrics)."""
    old = torch.zeros(len(ratios), 1)
    logprobs = torch.tensor(ratios).log().unsqueeze(1).requires_grad_(True)
    loss, metrics = policy_loss(logprobs, old, torch.tensor(advantages), torch.ones(len(ratios), 1), **kwargs)
    loss.backward()
    return loss, logprobs.grad.squeeze(1), metrics


def test_clipping_just_inside_and_outside_each_bound():
    # A > 0 clips above 1 + eps only; A < 0 clips below 1 - eps only; the other side stays unclipped (pessimistic)
    ratios = [1.199, 1.201, 0.801, 0.799, 1.5, 0.5]
    advantages = [1.0, 1.0, -1.0, -1.0, -1.0, 1.0]
    loss, grad, metrics = _one_token_each(ratios, advantages, variant="dapo")
    clipped = [False, True, False, True, False, False]
    for r, a, g, c in zip(ratios, advantages, grad.tolist(), clipped, strict=True):
        assert g == 0.0 if c else g == pytest.approx(-a * r / len(ratios))  # d(-r * A)/d log r = -r * A
    expected = [-1.199, -1.2, 0.801, 0.8, 1.5, -0.5]
    assert loss.item() == pytest.approx(sum(expected) / len(ratios))
    assert metrics["clip_frac"] == pytest.approx(2 / 6)
    assert metrics["clip_frac_high"] == pytest.approx(1 / 6)
    assert metrics["clip_frac_low"] == pytest.approx(1 / 6)


def test_eps_high_widens_only_the_upper_bound():
    ratios, advantages = [1.25, 0.75], [1.0, -1.0]
    symmetric = _one_token_each(ratios, advantages, variant="dapo", eps_low=0.2)
    asymmetric = _one_token_each(ratios, advantages, variant="dapo", eps_low=0.2, eps_high=0.28)
    assert symmetric[1].tolist() == [0.0, 0.0]  # 1.25 > 1.2 and 0.75 < 0.8: both clipped
    assert asymmetric[1][0].item() == pytest.approx(-1.25 / 2) and asymmetric[1][1].item() == 0.0
    assert symmetric[0].item() == pytest.approx((-1.2 + 0.8) / 2)
    assert asymmetric[0].item() == pytest.approx((-1.25 + 0.8) / 2)


@pytest.mark.parametrize("variant", ["grpo", "dr_grpo", "dapo", "gspo"])
def test_padded_tokens_change_nothing(variant):
    batch = _batch(seed=1)
    pad = ~batch.mask.bool()

    def run(fill: float | None):
        """policy_loss with every input's padded positions replaced by large noise, one of them by `fill`."""
        logits = batch.logits.clone().requires_grad_(True)
        inputs = [_token_logprobs(logits, batch.ids), _token_logprobs(batch.old_logits, batch.ids),
                  _token_logprobs(batch.ref_logits, batch.ids), batch.behaviour]
        if fill is not None:
            for seed, x in enumerate(list(inputs)):
                noise = 50 * torch.randn(B, C, generator=torch.Generator().manual_seed(seed))
                noise[1, 3:] = fill  # row 1 is 3 tokens long
                inputs[seed] = torch.where(pad, noise, x)
        inputs[0].retain_grad()
        lp, old, ref, behaviour = inputs
        loss, metrics = policy_loss(lp, old, group_advantages(batch.rewards, G), batch.mask, variant=variant,
                                    max_completion_length=MAX_LEN, ref_logprobs=ref, beta=0.1,
                                    behaviour_logprobs=behaviour)
        loss.backward()
        return loss, lp.grad, logits.grad, metrics

    clean = run(None)
    for fill in (1.0, math.inf, -math.inf, math.nan):
        dirty = run(fill)
        torch.testing.assert_close(dirty[0], clean[0], atol=0.0, rtol=0.0)
        torch.testing.assert_close(dirty[2], clean[2], atol=0.0, rtol=0.0)
        assert dirty[1][pad].abs().sum() == 0.0
        assert dirty[3] == clean[3]


def test_tis_weights_are_capped_and_detached():
    old = torch.zeros(3, 1, requires_grad=True)  # even if the caller forgets to detach it, no gradient goes through
    behaviour = torch.tensor([[-math.log(5.0)], [-math.log(1.5)], [math.log(2.0)]])  # weights 5 -> 2, 1.5, 0.5
    logprobs = torch.zeros(3, 1, requires_grad=True)
    advantages = torch.tensor([1.0, 1.0, -1.0])
    mask = torch.ones(3, 1)
    loss, metrics = policy_loss(logprobs, old, advantages, mask, variant="dapo", behaviour_logprobs=behaviour)
    loss.backward()
    assert old.grad is None
    # on-policy (ratio 1): token loss -A, times its TIS weight, which carries no gradient of its own
    assert loss.item() == pytest.approx((-2.0 - 1.5 + 0.5) / 3)
    assert logprobs.grad.squeeze(1).tolist() == pytest.approx([-2.0 / 3, -1.5 / 3, 0.5 / 3])
    assert metrics["tis_weight_mean"] == pytest.approx((2.0 + 1.5 + 0.5) / 3)
    loss_cap3, _ = policy_loss(logprobs, old, advantages, mask, variant="dapo", behaviour_logprobs=behaviour,
                               tis_cap=3.0)
    assert loss_cap3.item() == pytest.approx((-3.0 - 1.5 + 0.5) / 3)
    uncorrected, metrics = policy_loss(logprobs, old, advantages, mask, variant="dapo", behaviour_logprobs=behaviour,
                                       tis_cap=None)
    assert uncorrected.item() == pytest.approx(-1.0 / 3) and "tis_weight_mean" not in metrics


def test_variants_normalise_differently():
    # two sequences, lengths 1 and 3, every token loss -1 (on-policy, A = 1): grpo / gspo average per sequence,
    # dapo over tokens, dr_grpo over B * max_completion_length
    logprobs = torch.zeros(2, 4)
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0]])
    advantages = torch.ones(2)
    losses = {v: policy_loss(logprobs, logprobs, advantages, mask, variant=v, max_completion_length=10)[0].item()
              for v in ("grpo", "gspo", "dapo", "dr_grpo")}
    assert losses == pytest.approx({"grpo": -1.0, "gspo": -1.0, "dapo": -1.0, "dr_grpo": -4 / 20})
    advantages = torch.tensor([1.0, -1.0])
    assert policy_loss(logprobs, logprobs, advantages, mask, variant="grpo")[0].item() == pytest.approx(0.0)
    assert policy_loss(logprobs, logprobs, advantages, mask, variant="dapo")[0].item() == pytest.approx(2 / 4)


def test_gspo_clips_whole_sequences():
    # sequence ratio = exp(mean log-ratio): tokens 1.5x and 1/1.5 -> 1.0 (kept); 1.3x and 1.3x -> 1.3 (clipped)
    old = torch.zeros(2, 2)
    logprobs = torch.tensor([[math.log(1.5), -math.log(1.5)], [math.log(1.3), math.log(1.3)]], requires_grad=True)
    loss, metrics = policy_loss(logprobs, old, torch.ones(2), torch.ones(2, 2), variant="gspo")
    loss.backward()
    assert loss.item() == pytest.approx((-1.0 - 1.2) / 2)
    assert logprobs.grad[1].tolist() == [0.0, 0.0]
    assert logprobs.grad[0].tolist() == pytest.approx([-0.25, -0.25])  # d(-s)/d lp_t = -s / L, averaged over B
    assert metrics["clip_frac"] == pytest.approx(0.5)


def test_group_advantages_by_hand():
    rewards = torch.tensor([0.0, 1.0, 2.0, 2.0])
    std = math.sqrt(0.5)  # unbiased std of {0, 1} and of {2, 2} is 0
    assert group_advantages(rewards, 2).tolist() == pytest.approx([-0.5 / (std + 1e-4), 0.5 / (std + 1e-4), 0, 0])
    assert group_advantages(rewards, 2, scale="none").tolist() == [-0.5, 0.5, 0.0, 0.0]
    batch_std = rewards.std().item()
    assert group_advantages(rewards, 2, scale="batch").tolist() == pytest.approx(
        [-0.5 / (batch_std + 1e-4), 0.5 / (batch_std + 1e-4), 0, 0])


def test_bad_arguments_are_refused():
    lp = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="variant"):
        policy_loss(lp, lp, torch.zeros(2), torch.ones(2, 3), variant="ppo")
    with pytest.raises(ValueError, match="max_completion_length"):
        policy_loss(lp, lp, torch.zeros(2), torch.ones(2, 3), variant="dr_grpo")
    with pytest.raises(ValueError, match="ref_logprobs"):
        policy_loss(lp, lp, torch.zeros(2), torch.ones(2, 3), beta=0.1)
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(lp, lp, torch.zeros(2, 1), torch.ones(2, 3))
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(torch.zeros(5), 2)
    with pytest.raises(ValueError, match="scale"):
        group_advantages(torch.zeros(4), 2, scale="std")
