"""Data-parallel learners (torch distributed, gloo on the CPU): two ranks on shards of a batch make exactly the
update one learner makes on the whole batch."""

from __future__ import annotations

import pytest
import torch

from rlaif.train.learner import Learner
from tests.test_learner import _samples

pytestmark = pytest.mark.ray


@pytest.mark.parametrize("variant", ["grpo", "dapo"])
def test_two_ranks_on_shards_update_exactly_as_one_learner_on_the_batch(tiny_model, ray_local, variant):
    """The single learner is a Ray actor like the ranks: its matrix products then run in the same kind of process
    (threads, kernels), or their last-bit differences, which Adam scales up on tiny gradients, would reach 1e-5."""
    from transformers import AutoTokenizer

    ray = ray_local
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    samples = _samples(Learner(str(tiny_model)), tokenizer)
    actors = [ray.remote(Learner).options(num_cpus=0.5).remote(str(tiny_model), lr=1e-3, variant=variant,
                                                               micro_batch=1) for _ in range(3)]
    single, ranks = actors[0], actors[1:]
    try:
        address = ray.get(ranks[0].endpoint.remote())
        ray.get([r.join.remote(address, rank, 2) for rank, r in enumerate(ranks)])
        tokens = sum(sum(s.loss_mask) for s in samples)
        for _ in range(2):  # the second step also checks that the optimizer states stayed in step
            parts = ray.get([r.step.remote(samples[i::2], len(samples), tokens) for i, r in enumerate(ranks)])
            whole = ray.get(single.step.remote(samples))
            assert sum(p["loss"] for p in parts) == pytest.approx(whole["loss"], abs=1e-6)
            assert parts[0]["grad_norm"] == parts[1]["grad_norm"] == pytest.approx(whole["grad_norm"], rel=1e-5)
        expected = dict(ray.get(single.named_weights.remote()))
        for rank in ranks:
            for name, value in ray.get(rank.named_weights.remote()):
                assert torch.allclose(value, expected[name], atol=1e-6), name
    finally:
        for actor in actors:
            ray.kill(actor)
