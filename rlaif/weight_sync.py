"""Weight sync, learner -> rollout engines: bucketed, versioned, verified, timed.

The learner packs its parameters into buckets: one contiguous byte buffer per bucket of up to
`bucket_mb`, plus a small index of (name, dtype, shape, offset). A bucket crosses process boundaries as one
buffer (through Ray's object store, then the engine's own IPC), never tensor by tensor; this is what makes
a sync cost a few copies of the model rather than thousands of round trips (the per-tensor sync of older
frameworks). In the engine, `WorkerExtension` (installed with vLLM's `worker_extension_cls`) views each
bucket as tensors without copying and hands them to the model's own `load_weights`, which knows how the
engine fuses them (q/k/v into qkv_proj, gate/up into gate_up_proj).

Verification: `digest` is a fingerprint that does not change when tensors are concatenated along their first
dimension or padded with zero rows, so the learner's unfused parameters and the engine's fused and padded
ones give the same value. After loading, the engine returns its digest; `verify` compares it with the
learner's and raises on a mismatch.

On GPUs the same interface carries CUDA buffers: colocated engines receive CUDA IPC handles, remote ones an
NCCL broadcast through vLLM's weight-transfer engines; the CPU path is the object store, as here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

_DTYPES = {str(d): d for d in (torch.float32, torch.float16, torch.bfloat16)}
ALIGN = 64


@dataclass(frozen=True)
class Bucket:
    """Several tensors in one byte buffer; `index` holds (name, dtype, shape, byte offset) per tensor."""

    data: bytes
    index: list[tuple[str, str, list[int], int]]


class WeightSyncError(RuntimeError):
    """The engine does not hold what the learner sent."""


def pack(named: Iterable[tuple[str, torch.Tensor]], *, bucket_mb: float = 64.0,
         dtype: torch.dtype | None = None) -> list[Bucket]:
    """Pack tensors into buckets of at most `bucket_mb` (a tensor larger than that gets a bucket of its own)."""
    limit = int(bucket_mb * (1 << 20))
    buckets: list[Bucket] = []
    parts: list[bytes] = []
    index: list[tuple[str, str, list[int], int]] = []
    size = 0
    for name, tensor in named:
        t = tensor.detach().to("cpu", dtype or tensor.dtype).contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        raw += bytes(-len(raw) % ALIGN)  # every tensor starts aligned, as CUDA copies want
        if parts and size + len(raw) > limit:
            buckets.append(Bucket(b"".join(parts), index))
            parts, index, size = [], [], 0
        index.append((name, str(t.dtype), list(t.shape), size))
        parts.append(raw)
        size += len(raw)
    if parts:
        buckets.append(Bucket(b"".join(parts), index))
    return buckets


def unpack(data: bytes | memoryview, index: list) -> Iterator[tuple[str, torch.Tensor]]:
    """The tensors of a bucket, as views of its buffer (no copy)."""
    buffer = bytearray(data) if isinstance(data, bytes) else data
    for name, dtype, shape, offset in index:
        dt = _DTYPES[dtype]
        count = math.prod(shape)
        flat = torch.frombuffer(buffer, dtype=dt, count=count, offset=offset) if count else torch.empty(0, dtype=dt)
        yield name, flat.view(shape)


def digest(named: Iterable[tuple[str, torch.Tensor]]) -> list[float]:
    """(sum, sum of squares, column-weighted sum) over all tensors, in float64.

    Invariant under concatenation along dim 0 (fused projections and their biases) and zero padding (padded
    vocabularies); sensitive to any changed value and to most permutations within a row of a matrix (not to
    permutations within a 1-D tensor).
    """
    total = squares = weighted = 0.0
    for _, tensor in named:
        t = tensor.detach().to("cpu", torch.float64)
        if t.dim() < 2:  # a bias is one column: fused biases (q/k/v) are concatenations too
            t = t.reshape(-1, 1)
        columns = torch.arange(t.shape[-1], dtype=torch.float64)
        weights = torch.cos(columns * 0.7 + 0.3)
        total += float(t.sum())
        squares += float((t * t).sum())
        weighted += float((t * weights).sum())
    return [total, squares, weighted]


def verify(expected: list[float], got: list[float], *, rtol: float = 1e-6) -> None:
    """Raise WeightSyncError unless the two digests agree (float64 sums in different orders differ slightly)."""
    for a, b in zip(expected, got, strict=True):
        if not math.isclose(a, b, rel_tol=rtol, abs_tol=1e-6 * max(1.0, abs(expected[1]) ** 0.5)):
            raise WeightSyncError(f"engine weights differ from the learner's: digest {got} != {expected}")


class WorkerExtension:
    """Mixed into vLLM's worker (`worker_extension_cls="rlaif.weight_sync.WorkerExtension"`).

    Called through `engine.collective_rpc(name, args=...)` in every worker process: `rlaif_stage` once per
    bucket while the engine keeps generating, then `rlaif_apply`, which swaps all staged weights in one
    call. The swap must be one call: the engine runs its forward steps between calls, and mid-reload the
    layers are placeholders (meta tensors) that a forward step would crash on.

    Loading goes through vLLM's in-place layerwise reload, which restores each layer to checkpoint format,
    loads it with the model's own `load_weights` (fusing q/k/v and gate/up) and re-runs the layer's post-load
    processing. That processing may hand a weight to an opaque kernel (the CPU build packs linear weights for
    oneDNN and empties the parameter), so the digest is taken of the tensors this process loaded, at the
    load boundary, and every parameter name the model expects must have been loaded.

    Tied parameters (a tied `lm_head` shares the embedding's Parameter object) come apart in the reload,
    which replaces the embedding's Parameter; `rlaif_apply` ties them again and re-processes the module that
    lost its tie, or the engine would keep sampling from the old output embedding.
    """

    model_runner: Any
    vllm_config: Any

    def rlaif_stage(self, data: bytes, index: list) -> int:
        """Keep one bucket in this process until `rlaif_apply`; returns the number of tensors in it."""
        staged = self.__dict__.setdefault("_rlaif_staged", [])
        tensors = list(unpack(data, index))
        staged.extend(tensors)
        return len(tensors)

    def rlaif_apply(self) -> dict[str, Any]:
        """Load everything staged; returns its digest and the parameter names that got no value."""
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.model_loader.reload.layerwise import (
            finalize_layerwise_reload,
            initialize_layerwise_reload,
        )

        model, staged = self.model_runner.model, self.__dict__.pop("_rlaif_staged", [])
        ties = _shared_parameters(model)
        expected = {name for name, _ in model.named_parameters()}
        # The reload warns "Failed to load weights" for layers that have none of their own (rotary embeddings)
        # and for a tied head (re-tied below); completeness is checked here instead, by name.
        quiet = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            with set_current_vllm_config(self.vllm_config):
                initialize_layerwise_reload(model)
                loaded = set(model.load_weights(staged) or ())
                finalize_layerwise_reload(model, self.vllm_config.model_config)
        finally:
            quiet.setLevel(level)
        with set_current_vllm_config(self.vllm_config):
            for (owner, attr), followers in ties:
                for module, name in followers:
                    setattr(module, name, getattr(owner, attr))
                    if hasattr(module, "quant_method"):
                        module.quant_method.process_weights_after_loading(module)
        return {"digest": digest(staged), "missing": sorted(expected - loaded)}


def _shared_parameters(model: torch.nn.Module) -> list[tuple[tuple[Any, str], list[tuple[Any, str]]]]:
    """Parameters held by more than one module: ((first holder, attr), [(other holder, attr), ...])."""
    holders: dict[int, list[tuple[Any, str]]] = {}
    for module in model.modules():
        for attr, param in module.named_parameters(recurse=False):
            holders.setdefault(id(param), []).append((module, attr))
    return [(group[0], group[1:]) for group in holders.values() if len(group) > 1]
