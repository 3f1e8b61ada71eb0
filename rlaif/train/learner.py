"""The learner's step: the student in transformers, updated with a GRPO-family loss on token-exact samples.

A `Sample` is one model turn as the engine produced it (prompt ids, completion ids, the sampler's logprobs,
the loss mask) plus its advantage; the learner computes its own logprobs for exactly those ids and never
re-tokenises text. One `step` is one batch: `epochs` passes over it, each split into `mini_batches` optimizer
updates (PPO-style reuse; 1 and 1 by default, one update). With one update the old policy is the current one
(ratio 1, no extra forward pass); with several, the old logprobs are the learner's before the first update, so
the clip acts, and the gap from the sampler to that old policy is the importance-sampling correction's job
(decoupled PPO). Micro-batches accumulate gradients weighted so that the sum equals the loss of the update's
batch (by sequences, or by tokens for `dapo`), gradients are clipped; the weight version advances once per batch.

Data parallel: several learners (one per process or GPU) each hold the whole model; `join` puts them in one
torch distributed group (gloo on the CPU, NCCL on GPUs), each `step` gets a shard of the batch plus the
batch's totals, so every micro-batch is weighted as a share of the whole batch, and the gradients are summed
across ranks before clipping: every rank applies the same update, equal to one learner's on the whole batch
(tested). The weights are replicated, not sharded (no FSDP yet).

With `lora_rank > 0` the student is wrapped by `peft`; only the adapters train, and `named_weights` merges
them into the base weights, under the base model's names, for the rollout engines (which hold the merged
model). `state` / `load_state` carry everything a checkpoint needs to continue exactly: weights or
adapters, optimizer, scheduler, RNG and version.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rlaif.train.loss import policy_loss
from rlaif.weights.buckets import Bucket, digest, fill, pack, plan

PROBE_TEXT = ("def add(a, b):\n    \"\"\"Return the sum of a and b.\"\"\"\n    return a + b\n\n\n"
              "for x in range(3):\n    print(add(x, 2 * x))\n")
"""What engines are checked on after a sync (`probe`): any fixed text; code, like most of what they generate."""


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
                 weight_decay: float = 0.0, warmup_steps: int = 0, lora_rank: int = 0, lora_alpha: float = 32.0,
                 epochs: int = 1, mini_batches: int = 1, temperature: float = 1.0, dtype: str = "float32",
                 seed: int = 0) -> None:
        from transformers import AutoModelForCausalLM

        torch.manual_seed(seed)
        self.model_dir = model_dir
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"model.dtype {dtype!r} cannot be trained: float16 needs loss scaling, which the "
                             "learner lacks; use bfloat16 or float32")
        # Master weights and optimizer state are float32 whatever the dtype; bfloat16 is the forward's compute
        # dtype (autocast) and what engines and exports get. AdamW on bf16 weights rounds small updates to nothing.
        self.dtype = getattr(torch, dtype)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(self.device)
        if lora_rank:
            from peft import LoraConfig, get_peft_model

            self.model = get_peft_model(self.model, LoraConfig(r=lora_rank, lora_alpha=lora_alpha,
                                                               target_modules="all-linear"))
        self.lora = bool(lora_rank)
        self.model.train()
        self.ref = None
        if beta > 0 and not self.lora:  # with LoRA the reference is the base model: the adapters disabled
            self.ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=self.dtype).to(self.device).eval()
            self.ref.requires_grad_(False)
        self.beta = beta
        # No weight decay by default (as TRL): decay would move weights even where the loss gives no signal.
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / (warmup_steps + 1)) if warmup_steps else 1.0)
        self.loss_args = {"variant": variant, "eps_low": eps_low, "eps_high": eps_high, "beta": beta,
                          "tis_cap": tis_cap, "max_completion_length": max_completion_length}
        self.max_grad_norm, self.micro_batch = max_grad_norm, micro_batch
        if temperature <= 0:
            raise ValueError(f"temperature {temperature} cannot be trained on: GRPO needs sampled groups, and the "
                             "learner scores tokens under the sampling distribution; set rollout.temperature > 0")
        self.temperature = temperature
        if epochs < 1 or mini_batches < 1:
            raise ValueError(f"epochs and mini_batches must be at least 1, got {epochs} and {mini_batches}")
        self.epochs, self.mini_batches, self.seed = epochs, mini_batches, seed
        self.pad_id = self.model.config.pad_token_id or 0
        self.world_size = 1
        self.version = 0
        self._probe_ids: list[int] | None = None

    def token_logprobs(self, model: torch.nn.Module, samples: list[Sample],
                       temperature: float | None = None) -> tuple[Tensor, Tensor]:
        """(B, T) logprobs and (B, T) loss mask: `scores` without the entropy."""
        logprobs, mask, _ = self.scores(model, samples, temperature)
        return logprobs, mask

    def scores(self, model: torch.nn.Module, samples: list[Sample], temperature: float | None = None,
               entropy: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
        """(B, T) logprobs of each sample's completion ids under `model` at the sampling temperature (the
        distribution the tokens were drawn from, as the engine reports it; `temperature` overrides it), and the
        (B, T) loss mask (0 on padding); with `entropy`, also each position's entropy of the whole distribution at
        that temperature (detached, 0 on padding): a policy collapsing onto one answer shows it falling.

        The batch is right-padded; the model computes logits only from the first completion position on
        (`logits_to_keep`), and one gather picks every sample's completion rows, so the work does not grow with
        a per-sample loop (a row-by-row slice would make its backward write a zero-filled copy of all the logits).
        """
        prompts = torch.tensor([len(s.prompt_ids) for s in samples])
        completions = torch.tensor([len(s.completion_ids) for s in samples])
        width = int((prompts + completions).max())
        ids = self._padded([s.prompt_ids + s.completion_ids for s in samples], width, self.pad_id, torch.long)
        attention = (torch.arange(width) < (prompts + completions)[:, None]).long().to(self.device)
        keep = width - int(prompts.min()) + 1  # logits from the earliest position that predicts a completion token
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            logits = model(input_ids=ids, attention_mask=attention, logits_to_keep=keep).logits
        steps = torch.arange(int(completions.max()))
        inside = steps < completions[:, None]  # (B, T): False on padding
        # The row of `logits` that predicts each completion token; padding points at a real row, masked below.
        rows = (prompts[:, None] - 1 - (width - keep) + torch.where(inside, steps, 0)).to(self.device)
        picked = logits.gather(1, rows[:, :, None].expand(-1, -1, logits.size(-1)))
        targets = self._padded([s.completion_ids for s in samples], steps.numel(), 0, torch.long)
        scale = self.temperature if temperature is None else temperature
        distribution = torch.log_softmax(picked.float() / scale, -1)
        padding = ~inside.to(self.device)
        logprobs = distribution.gather(2, targets[:, :, None])[:, :, 0].masked_fill(padding, 0.0)
        mask = self._padded([s.loss_mask for s in samples], steps.numel(), 0, torch.float32)
        if not entropy:
            return logprobs, mask, None
        with torch.no_grad():
            entropies = -(distribution.exp() * distribution).sum(-1).masked_fill(padding, 0.0)
        return logprobs, mask, entropies

    def _padded(self, rows: list[list], width: int, value: float, dtype: torch.dtype) -> Tensor:
        """`rows` right-padded with `value` to `width`, as one (len(rows), width) tensor on the device."""
        return torch.tensor([row + [value] * (width - len(row)) for row in rows], dtype=dtype).to(self.device)

    @staticmethod
    def endpoint() -> str:
        """host:port where this process can accept the distributed group (call on rank 0)."""
        import socket

        import ray

        host = ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1"
        with socket.socket() as s:
            s.bind((host, 0))
            return f"{host}:{s.getsockname()[1]}"

    def join(self, address: str, rank: int, world_size: int) -> None:
        """Join the data-parallel group of `world_size` learners whose rank 0 listens at `address`."""
        import torch.distributed as dist

        backend = "nccl" if self.device.type == "cuda" else "gloo"
        dist.init_process_group(backend, init_method=f"tcp://{address}", rank=rank, world_size=world_size)
        self.world_size = world_size

    def step(self, samples: list[Sample], total_samples: int | None = None,
             total_tokens: int | None = None) -> dict[str, float]:
        """One batch's update: `epochs` passes over it, each in `mini_batches` optimizer steps; metrics include the
        loss, grad norm and clip fractions (means over the optimizer steps).

        With more than one optimizer step, the old policy is the learner before the first: its logprobs are computed
        once, up front, and every step's ratio is taken against them (the proximal clip), while the TIS weight
        corrects from the sampler's logprobs to those same old ones (decoupled PPO). With one, the old policy is the
        current one, its logprobs the current ones detached (the ratio is 1; no extra forward pass).

        In a data-parallel group, `samples` is this rank's shard and the totals are the whole batch's; the
        additive metrics (loss, clip fractions, entropy, tokens, samples) are this shard's share of the batch's.
        The (clipped) gradients stay in the parameters' `.grad` until the next step.
        """
        started = time.monotonic()
        updates = self.epochs * self.mini_batches
        with torch.no_grad():
            ref = self._reference(samples) if self.beta > 0 else None
            old = self._score(self.model, samples) if updates > 1 else None
        order = torch.Generator().manual_seed(self.seed * 1_000_003 + self.version)
        metrics: dict[str, float] = {"lr": self.scheduler.get_last_lr()[0]}
        for _ in range(self.epochs):
            picks = torch.randperm(len(samples), generator=order).tolist() if self.mini_batches > 1 else None
            for part in range(self.mini_batches):
                chosen = list(range(len(samples))) if picks is None else picks[part::self.mini_batches]
                totals = (total_samples, total_tokens) if self.mini_batches == 1 else None
                for key, value in self._update(samples, chosen, old, ref, totals).items():
                    metrics[key] = metrics.get(key, 0.0) + value / updates
        self.version += 1
        tokens = sum(sum(s.loss_mask) for s in samples)
        metrics.update(tokens=float(tokens), samples=float(len(samples)), updates=float(updates),
                       train_s=time.monotonic() - started)
        return metrics

    def _reference(self, samples: list[Sample]) -> list[Tensor]:
        """The reference policy's logprobs: the frozen initial model, or with LoRA the base with its adapters off."""
        if self.ref is not None:
            return self._score(self.ref, samples)
        with self.model.disable_adapter():
            return self._score(self.model, samples)

    def _score(self, model: torch.nn.Module, samples: list[Sample]) -> list[Tensor]:
        """Each sample's completion logprobs under `model` (1-D), computed micro-batch by micro-batch."""
        rows: list[Tensor] = []
        for i in range(0, len(samples), self.micro_batch):
            chunk = samples[i:i + self.micro_batch]
            logprobs, _ = self.token_logprobs(model, chunk)
            rows += [logprobs[j, :len(s.completion_ids)] for j, s in enumerate(chunk)]
        return rows

    def _totals(self, chosen: list[Sample], given: tuple[int | None, int | None] | None) -> tuple[int, int]:
        """(samples, tokens) of the whole of this optimizer step's batch, across the data-parallel group."""
        if given is not None:
            samples, tokens = given
            return samples or len(chosen), tokens or sum(sum(s.loss_mask) for s in chosen) or 1
        local = torch.tensor([len(chosen), sum(sum(s.loss_mask) for s in chosen)], dtype=torch.float64)
        if self.world_size > 1:
            import torch.distributed as dist

            local = local.to(self.device)
            dist.all_reduce(local)
        return max(1, int(local[0])), max(1, int(local[1]))

    def _update(self, samples: list[Sample], chosen: list[int], old: list[Tensor] | None,
                ref: list[Tensor] | None, given: tuple[int | None, int | None] | None) -> dict[str, float]:
        """One optimizer step on `samples[chosen]`: micro-batches accumulate gradients weighted so that their sum is
        the loss of this step's whole batch (by sequences, or by tokens for `dapo`), summed across ranks, clipped."""
        batch = [samples[i] for i in chosen]
        total_samples, total_tokens = self._totals(batch, given)
        self.optimizer.zero_grad(set_to_none=True)
        metrics: dict[str, float] = {}
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)  # read once, after the last chunk
        pad = torch.nn.utils.rnn.pad_sequence
        for at in range(0, len(chosen), self.micro_batch):
            ids = chosen[at:at + self.micro_batch]
            chunk = [samples[i] for i in ids]
            logprobs, mask, entropy = self.scores(self.model, chunk, entropy=True)
            behaviour = self._padded([s.behaviour_logprobs for s in chunk], logprobs.size(1), 0.0, torch.float32)
            loss, chunk_metrics = policy_loss(
                logprobs, pad([old[i] for i in ids], batch_first=True) if old is not None else logprobs.detach(),
                torch.tensor([s.advantage for s in chunk], device=self.device), mask,
                ref_logprobs=pad([ref[i] for i in ids], batch_first=True) if ref is not None else None,
                behaviour_logprobs=behaviour, **self.loss_args)
            share = (sum(sum(s.loss_mask) for s in chunk) / total_tokens if self.loss_args["variant"] == "dapo"
                     else len(chunk) / total_samples)
            (loss * share).backward()
            loss_sum += loss.detach().double() * share
            chunk_metrics["entropy"] = float((entropy * mask).sum() / mask.sum().clamp(min=1.0))
            for key, value in chunk_metrics.items():
                metrics[key] = metrics.get(key, 0.0) + value * share
        metrics["loss"] = loss_sum.item()
        if self.world_size > 1:
            import torch.distributed as dist

            for p in self.model.parameters():
                if p.requires_grad:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    dist.all_reduce(p.grad)
        metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm))
        self.optimizer.step()
        self.scheduler.step()
        return metrics

    def probe(self) -> tuple[list[int], list[float]]:
        """The token ids of `PROBE_TEXT` and the learner's logprob of each after the first, at temperature 1: what an
        engine holding these weights must give for the same ids."""
        from transformers import AutoTokenizer

        if self._probe_ids is None:
            self._probe_ids = list(AutoTokenizer.from_pretrained(self.model_dir)(PROBE_TEXT)["input_ids"][:64])
        ids = self._probe_ids
        probe = Sample(ids[:1], ids[1:], [0.0] * (len(ids) - 1), [1] * (len(ids) - 1), 0.0)
        with torch.no_grad():
            logprobs, _ = self.token_logprobs(self.model, [probe], temperature=1.0)
        return ids, logprobs[0].tolist()

    def named_weights(self) -> list[tuple[str, Tensor]]:
        """(Hugging Face name, tensor) of every weight the engines need, copied, adapters merged out of place (the
        base weights are never written: merging and unmerging in place would drift them by rounding at every sync)."""
        with torch.no_grad():
            if not self.lora:
                return [(name, p.detach().clone()) for name, p in self.model.named_parameters()]
            from peft.tuners.lora import LoraLayer

            base = self.model.get_base_model()
            deltas = {f"{name}.base_layer.weight": sum(module.get_delta_weight(a) for a in module.active_adapters)
                      for name, module in base.named_modules() if isinstance(module, LoraLayer)}
            return [(name.replace(".base_layer.", "."), p.detach() + deltas[name] if name in deltas
                     else p.detach().clone()) for name, p in base.named_parameters() if "lora_" not in name]

    def _engine_weights(self, dtype: str) -> list[tuple[str, Tensor]]:
        engine_dtype = getattr(torch, dtype)
        return [(name, t.to(engine_dtype)) for name, t in self.named_weights()]

    def sync_payload(self, bucket_mb: float = 64.0, dtype: str = "float32") -> tuple[list[Bucket], list[float]]:
        """Object-store path: the weights in the engines' dtype, as host buckets, and their digest."""
        named = self._engine_weights(dtype)
        return pack(named, bucket_mb=bucket_mb), digest(named)

    def open_weight_group(self, host: str, port: int, world_size: int, timeout_s: float) -> None:
        """Broadcast path: host the weight group as its rank 0 (see `rlaif.weights.group`), every broadcast bounded
        by `timeout_s`; blocks until all join."""
        from rlaif.weights.group import open_group

        self.weight_group = open_group(host, port, 0, world_size, self.device, timeout_s=timeout_s)

    def weight_plan(self, bucket_mb: float = 64.0, dtype: str = "float32") -> tuple[list[tuple[int, list]],
                                                                                     list[float]]:
        """Broadcast path, first half: the bucket layout [(size, index)] the engines allocate, and the digest.

        The weights are held until `broadcast_weights` sends them.
        """
        self._outgoing = self._engine_weights(dtype)
        self._plans = plan(self._outgoing, bucket_mb=bucket_mb)
        return [(p.size, p.index) for p in self._plans], digest(self._outgoing)

    def broadcast_weights(self) -> int:
        """Broadcast path, second half: send the planned buckets, one device buffer at a time; returns bytes sent.

        Raises `BroadcastAborted` when a bucket is not through within the group's timeout (an engine died or hung);
        the group is aborted and dropped (`open_weight_group` builds a new one).
        """
        from rlaif.weights.group import BroadcastAborted

        named, plans = dict(self._outgoing), self._plans
        self._outgoing, self._plans = [], []
        try:
            return self.weight_group.send(fill(named, bucket, self.device) for bucket in plans)
        except BroadcastAborted:
            self.weight_group = None
            raise

    def save(self, directory: str) -> None:
        """Write `learner.pt` (see `state`) into a checkpoint's staging directory."""
        torch.save(self.state(), Path(directory) / "learner.pt")

    def load(self, directory: str) -> int:
        """Restore from a checkpoint directory; returns the weight version."""
        self.load_state(torch.load(Path(directory) / "learner.pt", weights_only=False, map_location="cpu"))
        return self.version

    def save_model(self, path: str) -> None:
        """Save the merged model and its tokenizer in Hugging Face format (loadable by transformers and vLLM)."""
        from transformers import AutoTokenizer

        model = self.model.get_base_model() if self.lora else self.model
        state = {name: t.to(self.dtype) for name, t in self.named_weights()}  # in the model's dtype
        model.config.dtype = self.dtype  # the masters are float32; the export says what its tensors are
        try:
            model.save_pretrained(path, state_dict=state)
        finally:
            model.config.dtype = torch.float32
        AutoTokenizer.from_pretrained(self.model_dir).save_pretrained(path)

    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly: trainable weights, optimizer, scheduler, RNG, version."""
        weights = {n: p.detach().cpu() for n, p in self.model.named_parameters() if p.requires_grad}
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        rng = {"cpu": torch.get_rng_state(), "cuda": cuda}
        return {"weights": weights, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "rng": rng, "version": self.version}

    def load_state(self, state: dict[str, Any]) -> None:
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in state["weights"].items():
                params[name].copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["cpu"])
        if state["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.version = state["version"]
