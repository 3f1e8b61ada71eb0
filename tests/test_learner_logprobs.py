"""The learner's token logprobs: one batched gather, equal to scoring each sample on its own, row by row."""

from __future__ import annotations

import random

import pytest
import torch

from rlaif.train.learner import Learner, Sample

pytestmark = pytest.mark.unit


def _samples(n: int, seed: int = 0) -> list[Sample]:
    """Prompts and completions of mixed lengths (as a multi-turn batch has), masks with holes."""
    rng = random.Random(seed)
    samples = []
    for _ in range(n):
        prompt = [rng.randrange(3, 800) for _ in range(rng.randint(5, 30))]
        completion = [rng.randrange(3, 800) for _ in range(rng.randint(1, 20))]
        mask = [int(rng.random() > 0.2) for _ in completion]
        samples.append(Sample(prompt, completion, [-6.0] * len(completion), mask, rng.choice([1.0, -1.0])))
    return samples


def _row_by_row(learner: Learner, samples: list[Sample]) -> list[torch.Tensor]:
    """Each sample alone, unpadded: the log-softmax of the logits at its completion positions."""
    rows = []
    for s in samples:
        logits = learner.model(input_ids=torch.tensor([s.prompt_ids + s.completion_ids])).logits[0]
        start = len(s.prompt_ids) - 1
        scores = torch.log_softmax(logits[start:start + len(s.completion_ids)] / learner.temperature, -1)
        rows.append(scores.gather(1, torch.tensor(s.completion_ids)[:, None])[:, 0])
    return rows


def _graph_size(output: torch.Tensor) -> int:
    seen, todo = set(), [output.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and node not in seen:
            seen.add(node)
            todo += [parent for parent, _ in node.next_functions]
    return len(seen)


def test_batched_logprobs_equal_each_sample_scored_alone_with_padding_zeroed(tiny_model):
    learner = Learner(str(tiny_model), temperature=0.7)
    samples = _samples(6)
    logprobs, mask = learner.token_logprobs(learner.model, samples)
    alone = _row_by_row(learner, samples)
    width = max(len(s.completion_ids) for s in samples)
    assert logprobs.shape == mask.shape == (6, width)
    for i, (s, row) in enumerate(zip(samples, alone, strict=True)):
        k = len(s.completion_ids)
        assert torch.allclose(logprobs[i, :k], row, atol=1e-5), (logprobs[i, :k] - row).abs().max()
        assert mask[i].tolist() == s.loss_mask + [0] * (width - k) and not logprobs[i, k:].any()
    batched = torch.autograd.grad((logprobs * mask).sum(), learner.model.parameters())
    reference = torch.autograd.grad(sum((r * torch.tensor(s.loss_mask)).sum() for r, s in zip(alone, samples,
                                                                                                  strict=True)),
                                    learner.model.parameters())
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(batched, reference, strict=True))


def test_the_logprob_graph_does_not_grow_with_the_batch(tiny_model):
    """No per-sample slices: a row-by-row loop adds autograd nodes per sample, and each slice's backward writes
    a zero-filled tensor the size of all the logits."""
    learner = Learner(str(tiny_model))
    sizes = [_graph_size(learner.token_logprobs(learner.model, _samples(n))[0]) for n in (2, 8)]
    assert sizes[0] == sizes[1], sizes
