"""Weight sync, learner -> rollout engines: the bucket format and the fingerprint that verifies a sync.

The learner lays its parameters out in buckets (`plan`): one contiguous byte buffer per bucket of up to
`bucket_mb`, plus a small index of (name, dtype, shape, offset). A bucket crosses process boundaries as one
buffer, never tensor by tensor; this is what makes a sync cost a few copies of the model rather than
thousands of round trips (the per-tensor sync of older frameworks). Two transports carry the same buckets:
host bytes through Ray's object store (`pack`; the CPU path, and engines that share the learner's GPU), or a
broadcast of device buffers in a process group (`rlaif.weights.group`; NCCL between GPUs). In the engine,
`rlaif.weights.engine_extension.WorkerExtension` views each bucket as tensors without copying and hands them to the
model's own `load_weights`, which knows how the engine fuses them (q/k/v into qkv_proj, gate/up into
gate_up_proj).

Verification: `digest` is a fingerprint that does not change when tensors are concatenated along their first
dimension or padded with zero rows, so the learner's unfused parameters and the engine's fused and padded
ones give the same value. After loading, the engine returns its digest; `verify` compares it with the
learner's and raises on a mismatch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

_DTYPES = {str(d): d for d in (torch.float32, torch.float16, torch.bfloat16)}
ALIGN = 64


Entry = tuple[str, str, list[int], int]
"""(name, dtype, shape, byte offset) of one tensor in a bucket."""


@dataclass(frozen=True)
class Plan:
    """The layout of one bucket: its size in bytes and where each tensor lies in it."""

    size: int
    index: list[Entry]


@dataclass(frozen=True)
class Bucket:
    """Several tensors in one byte buffer, laid out as `index` says."""

    data: bytes
    index: list[Entry]


class WeightSyncError(RuntimeError):
    """The engine does not hold what the learner sent."""


def plan(named: Iterable[tuple[str, torch.Tensor]], *, bucket_mb: float = 64.0,
         dtype: torch.dtype | None = None) -> list[Plan]:
    """Lay tensors out in buckets of at most `bucket_mb` (a larger tensor gets a bucket of its own).

    Every tensor starts at a multiple of `ALIGN` bytes, as CUDA copies and dtype views of the buffer want.
    """
    limit = int(bucket_mb * (1 << 20))
    plans: list[Plan] = []
    index: list[Entry] = []
    size = 0
    for name, tensor in named:
        kind = dtype or tensor.dtype
        nbytes = tensor.numel() * kind.itemsize
        nbytes += -nbytes % ALIGN
        if index and size + nbytes > limit:
            plans.append(Plan(size, index))
            index, size = [], 0
        index.append((name, str(kind), list(tensor.shape), size))
        size += nbytes
    if index:
        plans.append(Plan(size, index))
    return plans


def fill(named: dict[str, torch.Tensor], bucket: Plan, device: torch.device | str = "cpu") -> torch.Tensor:
    """One bucket's bytes as a uint8 tensor on `device`, each tensor converted to its planned dtype."""
    buffer = torch.zeros(bucket.size, dtype=torch.uint8, device=device)
    for (name, _, _, _), (_, view) in zip(bucket.index, unpack(buffer, bucket.index), strict=True):
        view.copy_(named[name].detach())
    return buffer


def pack(named: Iterable[tuple[str, torch.Tensor]], *, bucket_mb: float = 64.0,
         dtype: torch.dtype | None = None) -> list[Bucket]:
    """Tensors as host byte buckets (see `plan`), for the object-store path."""
    named = list(named)
    lookup = dict(named)
    return [Bucket(fill(lookup, bucket).numpy().tobytes(), bucket.index)
            for bucket in plan(named, bucket_mb=bucket_mb, dtype=dtype)]


def unpack(data: bytes | memoryview | torch.Tensor, index: list[Entry]) -> Iterator[tuple[str, torch.Tensor]]:
    """The tensors of a bucket, as views of its buffer (no copy). `data` may be a uint8 tensor on any device."""
    if isinstance(data, torch.Tensor):
        buffer = data
    elif len(data):
        buffer = torch.frombuffer(bytearray(data) if isinstance(data, bytes) else data, dtype=torch.uint8)
    else:
        buffer = torch.empty(0, dtype=torch.uint8)
    for name, dtype, shape, offset in index:
        dt = _DTYPES[dtype]
        yield name, buffer[offset:offset + math.prod(shape) * dt.itemsize].view(dt).view(shape)


def digest(named: Iterable[tuple[str, torch.Tensor]]) -> list[float]:
    """(sum, sum of squares, column-weighted sum) over all tensors, in float64.

    Invariant under concatenation along dim 0 (fused projections and their biases) and zero padding (padded
    vocabularies); sensitive to any changed value and to most permutations within a row of a matrix (not to
    permutations within a 1-D tensor).
    """
    total = squares = weighted = 0.0
    for _, tensor in named:
        t = tensor.detach().to(torch.float64)  # on its own device: a GPU sums its weights without a host copy
        if t.dim() < 2:  # a bias is one column: fused biases (q/k/v) are concatenations too
            t = t.reshape(-1, 1)
        columns = torch.arange(t.shape[-1], dtype=torch.float64, device=t.device)
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
