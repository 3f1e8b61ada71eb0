"""The learner's step on the tiny model: it trains on exactly the recorded ids, moves probability towards
positive-advantage completions, and micro-batching changes nothing but memory."""

from __future__ import annotations

import pytest
import torch

from rlaif.train.learner import Learner, Sample

pytestmark = pytest.mark.unit


def _samples(learner: Learner, tokenizer) -> list[Sample]:
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Write add."}], add_generation_prompt=True,
                                           tokenize=True, return_dict=True)["input_ids"]
    good = tokenizer("def add(a, b):\n    return a + b")["input_ids"]
    bad = tokenizer("hello hello hello")["input_ids"]
    rows = [(good, 1.0), (good, 1.0), (bad, -1.0), (bad, -1.0)]
    samples = [Sample(list(prompt), ids, [0.0] * len(ids), [1] * len(ids), adv) for ids, adv in rows]
    with torch.no_grad():
        current, _ = learner.token_logprobs(learner.model, samples)
    return [Sample(s.prompt_ids, s.completion_ids, current[i, :len(s.completion_ids)].tolist(), s.loss_mask,
                   s.advantage) for i, s in enumerate(samples)]


def _mean_logprob(learner: Learner, sample: Sample) -> float:
    with torch.no_grad():
        logprobs, _ = learner.token_logprobs(learner.model, [sample])
    return logprobs.mean().item()


def test_updates_move_probability_towards_positive_advantages(tiny_model):
    from transformers import AutoTokenizer

    learner = Learner(str(tiny_model), lr=3e-3, micro_batch=2)
    samples = _samples(learner, AutoTokenizer.from_pretrained(tiny_model))
    good_before, bad_before = _mean_logprob(learner, samples[0]), _mean_logprob(learner, samples[2])
    for _ in range(5):
        metrics = learner.step(samples)
    assert learner.version == 5 and metrics["grad_norm"] > 0 and metrics["tokens"] == sum(len(s.loss_mask)
                                                                                         for s in samples)
    assert _mean_logprob(learner, samples[0]) > good_before + 0.5
    assert _mean_logprob(learner, samples[2]) < bad_before - 0.5


@pytest.mark.parametrize("variant", ["grpo", "dapo", "dr_grpo"])
def test_micro_batching_gives_the_full_batch_gradient(tiny_model, variant):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    grads = []
    for micro in (4, 1):
        learner = Learner(str(tiny_model), lr=1e-2, micro_batch=micro, variant=variant, max_completion_length=32,
                          max_grad_norm=1e9)
        learner.step(_samples(learner, tokenizer))
        grads.append(torch.cat([p.grad.flatten() for p in learner.model.parameters()]))
    assert grads[0].abs().max() > 0
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-7), (grads[0] - grads[1]).abs().max()


def test_masked_tokens_do_not_train(tiny_model):
    from transformers import AutoTokenizer

    learner = Learner(str(tiny_model), lr=1e-2)
    samples = _samples(learner, AutoTokenizer.from_pretrained(tiny_model))
    masked = [Sample(s.prompt_ids, s.completion_ids, s.behaviour_logprobs, [0] * len(s.loss_mask), s.advantage)
              for s in samples]
    before = [p.detach().clone() for p in learner.model.parameters()]
    metrics = learner.step(masked)
    assert metrics["grad_norm"] == 0.0
    assert all(torch.equal(p, b) for p, b in zip(learner.model.parameters(), before, strict=True))


def test_a_checkpoint_restores_weights_optimizer_scheduler_and_version_exactly(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    learner = Learner(str(tiny_model), lr=1e-3, warmup_steps=3)
    learner.step(_samples(learner, tokenizer))
    learner.save(str(tmp_path))
    restored = Learner(str(tiny_model), lr=1e-3, warmup_steps=3)
    assert restored.load(str(tmp_path)) == 1
    samples = _samples(learner, tokenizer)
    torch.manual_seed(5)
    learner.step(samples)
    torch.manual_seed(5)
    restored.step(samples)
    for (name, a), (_, b) in zip(learner.model.named_parameters(), restored.model.named_parameters(), strict=True):
        assert torch.equal(a, b), name  # the second step (Adam moments, warm-up lr) continues identically


def test_lora_trains_only_adapters_and_syncs_merged_weights_under_the_base_names(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlaif.weights.buckets import digest, unpack

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    learner = Learner(str(tiny_model), lr=1e-2, lora_rank=4)
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    before = dict(learner.named_weights())
    assert set(before) == {name for name, _ in base.named_parameters()}  # names the engine's loader knows
    learner.step(_samples(learner, tokenizer))
    after = dict(learner.named_weights())
    changed = [n for n in after if not torch.equal(after[n], before[n])]
    assert changed and all("proj" in n for n in changed)  # merged adapters moved the projections only
    buckets, expected = learner.sync_payload(bucket_mb=0.5)
    sent = [t for b in buckets for t in unpack(b.data, b.index)]
    assert digest(sent) == expected and {n for n, _ in sent} == set(after)
    learner.save_model(str(tmp_path / "merged"))
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    assert all(torch.equal(p, after[n]) for n, p in merged.named_parameters())


def test_several_updates_per_batch_clip_against_the_policy_before_the_first(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    once = Learner(str(tiny_model), lr=3e-2, micro_batch=2)
    assert once.step(_samples(once, tokenizer))["clip_frac"] == 0.0, "one update: the ratio is 1"
    reused = Learner(str(tiny_model), lr=3e-2, micro_batch=2, epochs=3, mini_batches=2)
    metrics = reused.step(_samples(reused, tokenizer))
    assert metrics["updates"] == 6 and reused.version == 1
    assert reused.optimizer.state[next(iter(reused.optimizer.state))]["step"] == 6
    assert metrics["clip_frac"] > 0 and metrics["ratio_mean"] != 1.0


def test_gspo_and_grpo_differ_once_the_policy_has_moved(tiny_model):
    """With one update the ratio is 1 and GSPO's sequence ratio has GRPO's gradient; from the second update of a
    batch on, the ratios differ from 1 and the two losses give different gradients."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    grads = {}
    for epochs in (1, 2):
        for variant in ("grpo", "gspo"):
            learner = Learner(str(tiny_model), lr=3e-2, variant=variant, epochs=epochs, max_grad_norm=1e9)
            learner.step(_samples(learner, tokenizer))
            grads[variant, epochs] = torch.cat([p.grad.flatten() for p in learner.model.parameters()])
    assert torch.allclose(grads["grpo", 1], grads["gspo", 1], rtol=1e-4, atol=1e-7)
    assert not torch.allclose(grads["grpo", 2], grads["gspo", 2], rtol=1e-3, atol=1e-6)


def test_with_lora_the_kl_reference_is_the_base_with_adapters_off_not_a_second_model(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    learner = Learner(str(tiny_model), lr=3e-2, beta=0.1, lora_rank=4)
    assert learner.ref is None
    samples = _samples(learner, tokenizer)
    base = Learner(str(tiny_model))
    with torch.no_grad():
        expected = base._score(base.model, samples)
    for _ in range(3):
        metrics = learner.step(samples)
    assert metrics["kl"] > 0, "the adapters moved the policy away from the base"
    with torch.no_grad():
        reference = learner._reference(samples)
    assert all(torch.allclose(r, e, atol=1e-5) for r, e in zip(reference, expected, strict=True))


def test_a_bf16_step_at_lr_1e_6_moves_the_weights_as_an_fp32_step_does(tiny_model):
    """Master weights stay float32 under bfloat16 compute: AdamW's first step moves each weight by about lr, where
    on bf16 weights (8 bits of mantissa) most of those updates would round to nothing."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    moved = {}
    for dtype in ("float32", "bfloat16"):
        learner = Learner(str(tiny_model), lr=1e-6, dtype=dtype)
        before = torch.cat([p.detach().flatten().clone() for p in learner.model.parameters()])
        learner.step(_samples(learner, tokenizer))
        moved[dtype] = torch.cat([p.detach().flatten() for p in learner.model.parameters()]) - before
    assert all(p.dtype == torch.float32 for p in learner.model.parameters())
    trained = moved["float32"].abs() > 5e-7
    assert trained.float().mean() > 0.3, "many weights get a gradient in the first step"
    agree = (moved["bfloat16"][trained] - moved["float32"][trained]).abs() < 2e-7
    assert agree.float().mean() > 0.9, agree.float().mean()


def test_fp16_is_refused_until_loss_scaling_exists(tiny_model):
    with pytest.raises(ValueError, match="float16 needs loss scaling"):
        Learner(str(tiny_model), dtype="float16")


def test_twenty_syncs_leave_the_lora_base_weights_bit_identical(tiny_model):
    from transformers import AutoTokenizer

    learner = Learner(str(tiny_model), lr=3e-2, lora_rank=4, dtype="bfloat16")
    learner.step(_samples(learner, AutoTokenizer.from_pretrained(tiny_model)))
    base = {n: p.detach().clone() for n, p in learner.model.named_parameters() if "lora_" not in n}
    first = learner.named_weights()
    for _ in range(19):
        learner.named_weights()
    assert all(torch.equal(p, base[n]) for n, p in learner.model.named_parameters() if "lora_" not in n)
    again = learner.named_weights()
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(first, again, strict=True))
    plain = {n.replace(".base_layer.", "."): p for n, p in learner.model.get_base_model().named_parameters()
             if "lora_" not in n}
    assert any(not torch.equal(t, plain[n]) for n, t in first), "the merged weights carry the adapters' delta"


def test_entropy_is_the_sampling_distributions_on_the_trained_tokens(tiny_model):
    """The logged entropy is that of the whole next-token distribution at the sampling temperature, averaged over
    the loss mask's tokens, as the policy was before the update: computed here from the model's own logits."""
    from transformers import AutoTokenizer

    learner = Learner(str(tiny_model), lr=1e-3, temperature=0.7)
    samples = _samples(learner, AutoTokenizer.from_pretrained(tiny_model))[::2]
    samples = [Sample(s.prompt_ids, s.completion_ids, s.behaviour_logprobs, [0, *s.loss_mask[1:]], s.advantage)
               for s in samples]
    expected = []
    with torch.no_grad():
        for s in samples:
            logits = learner.model(input_ids=torch.tensor([s.prompt_ids + s.completion_ids])).logits[0]
            rows = torch.log_softmax(logits[len(s.prompt_ids) - 1:-1] / 0.7, -1)
            expected += (-(rows.exp() * rows).sum(-1))[1:].tolist()  # the first token is masked out
    metrics = learner.step(samples)
    assert metrics["entropy"] == pytest.approx(sum(expected) / len(expected), rel=1e-4)
    assert 0 < metrics["entropy"] < torch.log(torch.tensor(float(learner.model.config.vocab_size)))
