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
    ray = ray_local
    # Ray gives each rank one thread (OMP_NUM_THREADS=1 for a fractional CPU); the single learner must sum its
    # matrix products in the same order, or Adam turns the last-bit differences of tiny gradients into 1e-5.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _compare(tiny_model, ray, variant)
    finally:
        torch.set_num_threads(threads)


def _compare(tiny_model, ray, variant: str) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    single = Learner(str(tiny_model), lr=1e-3, variant=variant, micro_batch=1)
    samples = _samples(single, tokenizer)
    ranks = [ray.remote(Learner).options(num_cpus=0.5).remote(str(tiny_model), lr=1e-3, variant=variant,
                                                              micro_batch=1) for _ in range(2)]
    try:
        address = ray.get(ranks[0].endpoint.remote())
        ray.get([r.join.remote(address, rank, 2) for rank, r in enumerate(ranks)])
        tokens = sum(sum(s.loss_mask) for s in samples)
        for _ in range(2):  # the second step also checks that the optimizer states stayed in step
            parts = ray.get([r.step.remote(samples[i::2], len(samples), tokens) for i, r in enumerate(ranks)])
            whole = single.step(samples)
            assert sum(p["loss"] for p in parts) == pytest.approx(whole["loss"], abs=1e-6)
            assert parts[0]["grad_norm"] == parts[1]["grad_norm"] == pytest.approx(whole["grad_norm"], rel=1e-5)
        expected = dict(single.named_weights())
        for rank in ranks:
            for name, value in ray.get(rank.named_weights.remote()):
                assert torch.allclose(value, expected[name], atol=1e-6), name
    finally:
        for r in ranks:
            ray.kill(r)
