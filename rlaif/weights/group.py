"""The broadcast path of weight sync: one process group, learner (rank 0) -> every engine worker.

The same code runs on both kinds of machine: the group is gloo when the buffers live in host memory and
NCCL when they live on GPUs, so a bucket goes from the learner's GPU to every engine's GPU without touching
host memory or Ray's object store. The group is built outside `torch.distributed`'s default group (the
engines already own theirs) from a TCP store that the learner hosts. NCCL needs every rank on its own
device: engines that share the learner's GPU take the object-store path instead (`train.weight_transport`).

Each bucket is broadcast as one uint8 buffer laid out by `rlaif.weights.buckets.plan`; receivers allocate it from the
plan, which reaches them through Ray beforehand, and view it as tensors without a copy.

Failure: a broadcast is a collective, so one rank that dies or hangs stalls every other rank. Every wait is
bounded by the group's `timeout_s` (`train.weight_sync_timeout_s`); a rank whose wait fails or runs out aborts
its group and raises `BroadcastAborted`. An aborted group is never used again: the fleet rebuilds it once all
its engines are back, and meanwhile sends weights by the object store. The bound is per bucket, not per sync.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from datetime import timedelta

import torch
import torch.distributed as dist

STORE_PREFIX = "rlaif-weights"


class BroadcastAborted(RuntimeError):
    """A broadcast in the weight group failed or outlasted its timeout (a rank died or hung); the group is aborted."""


class WeightGroup:
    """One rank's membership of the weight group (see `open_group`); unusable once aborted."""

    def __init__(self, backend: dist.Backend, rank: int, timeout_s: float) -> None:
        self.backend, self.rank, self.timeout_s = backend, rank, timeout_s
        self.aborted = False

    def send(self, buffers: Iterable[torch.Tensor]) -> int:
        """Broadcast each bucket buffer from rank 0, in order; returns the bytes sent."""
        sent = 0
        for buffer in buffers:
            self._broadcast(buffer)
            sent += buffer.numel()
        return sent

    def receive(self, size: int, device: torch.device | str) -> torch.Tensor:
        """The next bucket rank 0 broadcasts, as a uint8 buffer of `size` bytes on `device`."""
        buffer = torch.empty(size, dtype=torch.uint8, device=device)
        self._broadcast(buffer)
        return buffer

    def _broadcast(self, buffer: torch.Tensor) -> None:
        if self.aborted:
            raise BroadcastAborted(f"weight group rank {self.rank}: aborted by an earlier failure; rejoin first")
        started = time.monotonic()
        try:
            # With a timeout, wait() blocks the host on NCCL too (without one it only orders the streams).
            self.backend.broadcast(buffer, 0).wait(timedelta(seconds=self.timeout_s))
        except RuntimeError as err:  # gloo and NCCL raise RuntimeError (DistBackendError) on a timeout or lost peer
            self.abort()
            raise BroadcastAborted(
                f"weight broadcast failed on rank {self.rank} after {time.monotonic() - started:.1f} s (bound "
                f"{self.timeout_s:g} s, train.weight_sync_timeout_s): a rank of the group died or hung; the group "
                f"is aborted ({err})") from err

    def abort(self) -> None:
        """Abort the group's connections (NCCL: its communicator and watchdog); idempotent."""
        if not self.aborted:
            self.aborted = True
            self.backend.abort()


def open_group(host: str, port: int, rank: int, world_size: int, device: torch.device | str, *,
               timeout_s: float, join_timeout_s: float = 300.0) -> WeightGroup:
    """Join the weight group; rank 0 hosts the store. Blocks until all `world_size` ranks have joined (at most
    `join_timeout_s`), then broadcasts one byte: NCCL creates its communicator at the first collective, and a
    rank that dies while it is being created blocks the others unboundedly, so that happens here, with all present.

    Each broadcast afterwards is bounded by `timeout_s`, and so is the backend's own op timeout: a gloo group
    cannot be freed while an op is stuck in its worker thread, and NCCL's watchdog would take over.
    """
    store = dist.PrefixStore(STORE_PREFIX, dist.TCPStore(host, port, world_size, is_master=rank == 0,
                                                         timeout=timedelta(seconds=join_timeout_s)))
    timeout = timedelta(seconds=timeout_s)
    if torch.device(device).type == "cuda":
        options = dist.ProcessGroupNCCL.Options()
        options._timeout = timeout
        # NCCL reads this per group, when it is built. The default (3) makes the watchdog take the whole process
        # down when an op fails or times out; 2 makes it abort the communicator only, so the failure stays
        # this group's (`BroadcastAborted`) and the engine or learner goes on.
        previous = os.environ.get("TORCH_NCCL_ASYNC_ERROR_HANDLING")
        os.environ["TORCH_NCCL_ASYNC_ERROR_HANDLING"] = "2"
        try:
            backend = dist.ProcessGroupNCCL(store, rank, world_size, options)
        finally:
            if previous is None:
                os.environ.pop("TORCH_NCCL_ASYNC_ERROR_HANDLING")
            else:
                os.environ["TORCH_NCCL_ASYNC_ERROR_HANDLING"] = previous
    else:
        backend = dist.ProcessGroupGloo(store, rank, world_size, timeout)
    group = WeightGroup(backend, rank, timeout_s)
    group._broadcast(torch.zeros(1, dtype=torch.uint8, device=device))
    return group
