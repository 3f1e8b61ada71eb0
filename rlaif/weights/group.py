"""The broadcast path of weight sync: one process group, learner (rank 0) -> every engine worker.

The same code runs on both kinds of machine: the group is gloo when the buffers live in host memory and
NCCL when they live on GPUs, so a bucket goes from the learner's GPU to every engine's GPU without touching
host memory or Ray's object store. The group is built outside `torch.distributed`'s default group (the
engines already own theirs) from a TCP store that the learner hosts. NCCL needs every rank on its own
device: engines that share the learner's GPU take the object-store path instead (`train.weight_transport`).

Each bucket is broadcast as one uint8 buffer laid out by `weight_sync.plan`; receivers allocate it from the
plan, which reaches them through Ray beforehand, and view it as tensors without a copy.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import timedelta

import torch
import torch.distributed as dist

from rlaif.weights.buckets import Plan

STORE_PREFIX = "rlaif-weights"


def open_group(host: str, port: int, rank: int, world_size: int, device: torch.device | str,
               timeout_s: float = 300.0) -> dist.Backend:
    """Join the weight group; rank 0 hosts the store. Blocks until all `world_size` ranks have joined."""
    timeout = timedelta(seconds=timeout_s)
    store = dist.PrefixStore(STORE_PREFIX, dist.TCPStore(host, port, world_size, is_master=rank == 0,
                                                         timeout=timeout))
    if torch.device(device).type == "cuda":
        options = dist.ProcessGroupNCCL.Options()
        options._timeout = timeout
        return dist.ProcessGroupNCCL(store, rank, world_size, options)
    return dist.ProcessGroupGloo(store, rank, world_size, timeout)


def send(group: dist.Backend, buffers: Iterable[torch.Tensor]) -> int:
    """Broadcast each bucket buffer from rank 0, in order; returns the bytes sent."""
    sent = 0
    for buffer in buffers:
        group.broadcast(buffer, 0).wait()
        sent += buffer.numel()
    return sent


def receive(group: dist.Backend, plans: list[Plan], device: torch.device | str) -> Iterator[torch.Tensor]:
    """The buckets rank 0 broadcasts, one uint8 buffer per plan, on `device`."""
    for bucket in plans:
        buffer = torch.empty(bucket.size, dtype=torch.uint8, device=device)
        group.broadcast(buffer, 0).wait()
        yield buffer
