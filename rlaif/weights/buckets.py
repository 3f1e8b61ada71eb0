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

Verification: `digest` is a fingerprint of the tensors as sent, by name, that changes when any value changes or
moves (a permuted row, two swapped layers). The engine returns the digest of what it received; `verify` compares
it with the learner's and raises on a mismatch. It proves transport, not loading: how the engine's loader placed
the tensors is for a check of the engine's outputs.
"""

from __future__ import annotations

import math
import zlib
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


def digest(named: Iterable[tuple[str, torch.Tensor]], chunk_elements: int = 1 << 22) -> list[float]:
    """(sum, sum of squares, position-weighted sum) over all tensors, in float64. Each is a sum over the tensors, so
    the digests of disjoint sets of tensors add up to theirs together: the engine adds its buckets' as they load.

    The third weights each element by its row, its column and its tensor's name, so it changes when values move:
    rows permuted, a row's elements swapped, two same-shaped tensors exchanged. It is computed on the tensors as
    sent and as received, name by name, so both sides see the same layout. Each tensor is read in chunks of at
    most `chunk_elements` (float64 copies of one chunk, on the tensor's own device: a GPU sums without a host copy).
    """
    total = squares = weighted = 0.0
    for name, tensor in named:
        t = tensor.detach()
        t = t.reshape(1, -1) if t.dim() < 2 else t.reshape(t.shape[0], -1)
        phase = zlib.crc32(name.encode()) / 2**32 * 2 * math.pi
        columns = torch.cos(torch.arange(t.shape[1], dtype=torch.float64, device=t.device) * 0.7 + 0.3)
        step = max(1, chunk_elements // max(1, t.shape[1]))
        for start in range(0, t.shape[0], step):
            part = t[start:start + step].to(torch.float64)
            rows = torch.arange(start, start + part.shape[0], dtype=torch.float64, device=t.device)
            total += float(part.sum())
            squares += float((part * part).sum())
            weighted += float(((part * columns).sum(dim=1) * torch.cos(rows * 0.37 + phase)).sum())
    return [total, squares, weighted]


def verify(expected: list[float], got: list[float], *, rtol: float = 1e-6) -> None:
    """Raise WeightSyncError unless the two digests agree (float64 sums in different orders differ slightly)."""
    for a, b in zip(expected, got, strict=True):
        if not math.isclose(a, b, rel_tol=rtol, abs_tol=1e-6 * max(1.0, abs(expected[1]) ** 0.5)):
            raise WeightSyncError(f"engine weights differ from the learner's: digest {got} != {expected}")
