"""The learner's step: the student in transformers, updated with a GRPO-family loss on token-exact samples.

A `Sample` is one model turn as the engine produced it (prompt ids, completion ids, the sampler's logprobs,
the loss mask) plus its advantage; the learner computes its own logprobs for exactly those ids and never
re-tokenises text. One `step` is one optimizer update: the old-policy logprobs are taken before it (so the
ratio starts at 1: on-policy), micro-batches accumulate gradients weighted so that the sum equals the
full-batch loss (by sequences, or by tokens for `dapo`), gradients are clipped, the weight version advances.

Single process on the CPU; the Ray actor and the distributed (GPU) learner wrap this with issue #6.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from rlaif.loss import policy_loss


@dataclass(frozen=True)
class Sample:
    prompt_ids: list[int]
    completion_ids: list[int]
    behaviour_logprobs: list[float]
    loss_mask: list[int]
    advantage: float


class Learner:
    """Holds the student and its optimizer; `step(samples)` applies one update and returns its metrics."""

    def __init__(self, model_dir: str, *, lr: float = 1e-5, variant: str = "grpo", eps_low: float = 0.2,
                 eps_high: float | None = None, beta: float = 0.0, tis_cap: float | None = 2.0,
                 max_grad_norm: float = 1.0, micro_batch: int = 8, max_completion_length: int | None = None,
                 weight_decay: float = 0.0, seed: int = 0) -> None:
        from transformers import AutoModelForCausalLM

        torch.manual_seed(seed)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        self.model.train()
        self.ref = None
        if beta > 0:
            self.ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
            self.ref.requires_grad_(False)
        # No weight decay by default (as TRL): decay would move weights even where the loss gives no signal.
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=weight_decay)
        self.loss_args = {"variant": variant, "eps_low": eps_low, "eps_high": eps_high, "beta": beta,
                          "tis_cap": tis_cap, "max_completion_length": max_completion_length}
        self.max_grad_norm, self.micro_batch = max_grad_norm, micro_batch
        self.pad_id = self.model.config.pad_token_id or 0
        self.version = 0

    def token_logprobs(self, model: torch.nn.Module, samples: list[Sample]) -> tuple[Tensor, Tensor]:
        """(B, T) logprobs of each sample's completion ids under `model`, and the (B, T) loss mask (0 on padding)."""
        width = max(len(s.prompt_ids) + len(s.completion_ids) for s in samples)
        completion_width = max(len(s.completion_ids) for s in samples)
        ids = torch.full((len(samples), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros_like(ids)
        for i, s in enumerate(samples):
            n = len(s.prompt_ids) + len(s.completion_ids)
            ids[i, :n] = torch.tensor(s.prompt_ids + s.completion_ids)
            attention[i, :n] = 1
        logits = model(input_ids=ids, attention_mask=attention).logits
        mask = torch.zeros(len(samples), completion_width)
        rows = []
        for i, s in enumerate(samples):
            start, k = len(s.prompt_ids) - 1, len(s.completion_ids)
            row = torch.log_softmax(logits[i, start:start + k].float(), -1)
            rows.append(row.gather(1, torch.tensor(s.completion_ids)[:, None])[:, 0])
            mask[i, :k] = torch.tensor(s.loss_mask, dtype=torch.float32)
        logprobs = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
        return logprobs, mask

    def step(self, samples: list[Sample]) -> dict[str, float]:
        """One optimizer update on `samples`; metrics include the loss, grad norm and clip fractions.

        The (clipped) gradients stay in the parameters' `.grad` until the next step.
        """
        started = time.monotonic()
        chunks = [samples[i:i + self.micro_batch] for i in range(0, len(samples), self.micro_batch)]
        total_tokens = sum(sum(s.loss_mask) for s in samples) or 1
        with torch.no_grad():
            old = [self.token_logprobs(self.model, chunk)[0] for chunk in chunks]
            ref = [self.token_logprobs(self.ref, chunk)[0] for chunk in chunks] if self.ref is not None else None
        self.optimizer.zero_grad(set_to_none=True)
        metrics: dict[str, float] = {"loss": 0.0}
        for n, chunk in enumerate(chunks):
            logprobs, mask = self.token_logprobs(self.model, chunk)
            behaviour = torch.nn.utils.rnn.pad_sequence(
                [torch.tensor(s.behaviour_logprobs, dtype=torch.float32) for s in chunk], batch_first=True)
            loss, chunk_metrics = policy_loss(
                logprobs, old[n], torch.tensor([s.advantage for s in chunk]), mask,
                ref_logprobs=ref[n] if ref is not None else None, behaviour_logprobs=behaviour, **self.loss_args)
            share = (mask.sum().item() / total_tokens if self.loss_args["variant"] == "dapo"
                     else len(chunk) / len(samples))
            (loss * share).backward()
            metrics["loss"] += loss.item() * share
            for key, value in chunk_metrics.items():
                metrics[key] = metrics.get(key, 0.0) + value * share
        metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm))
        self.optimizer.step()
        self.version += 1
        metrics.update(tokens=float(total_tokens), samples=float(len(samples)), train_s=time.monotonic() - started)
        return metrics
