"""The engine side of weight sync, mixed into vLLM's worker (`worker_extension_cls`, see `WORKER_EXTENSION`).

Called through `engine.collective_rpc(name, args=...)` in every worker process of an engine. Weights arrive
either as host bytes, staged bucket by bucket while the engine keeps generating (`rlaif_stage`) and loaded by
`rlaif_apply`; or as a broadcast in the weight group (`rlaif_join` once), where `rlaif_receive` loads each bucket
as it arrives and frees it, so the device holds one or two buckets beyond the model, never a second copy of it.
Either way the swap is one call: the engine runs its forward steps between calls, and mid-reload the layers are
placeholders (meta tensors) that a forward step would crash on.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from rlaif.weights.buckets import digest, unpack
from rlaif.weights.group import BroadcastAborted, WeightGroup, open_group

WORKER_EXTENSION = "rlaif.weights.engine_extension.WorkerExtension"


class WorkerExtension:
    """Loading goes through vLLM's in-place layerwise reload, which restores each layer to checkpoint format,
    loads it with the model's own `load_weights` (fusing q/k/v and gate/up) and re-runs the layer's post-load
    processing. That processing may hand a weight to an opaque kernel (the CPU build packs linear weights for
    oneDNN and empties the parameter), so the digest is taken of the tensors this process loaded, at the
    load boundary, and every parameter name the model expects must have been loaded.

    The reload keeps a layer's tensors until all of its elements have arrived, then loads and processes it, so a
    layer may be split across buckets (q in one, k and v in the next); meanwhile it holds those tensors, which are
    views of their bucket. Buckets follow the model's parameter order, so the extra memory is the bucket arriving
    plus the one a pending layer began in: two buckets, as long as a layer fits in one (a larger layer, a 7B's
    gate/up pair, holds its own buckets until its last part is in). One exception is vLLM's: a layer whose
    parameter is larger than its checkpoint tensor (a vocabulary padded to a multiple of 64) is processed only
    when the reload ends, so its bucket is held throughout.

    Tied parameters (a tied `lm_head` shares the embedding's Parameter object) come apart in the reload,
    which replaces the embedding's Parameter; the reload ties them again and re-processes the module that
    lost its tie, or the engine would keep sampling from the old output embedding.
    """

    model_runner: Any
    vllm_config: Any

    def rlaif_stage(self, data: bytes, index: list) -> int:
        """Keep one host bucket (host memory: its device copy is made as it loads) until `rlaif_apply`; returns
        the number of tensors in it."""
        self.__dict__.setdefault("_rlaif_staged", []).append((data, index))
        return len(index)

    def rlaif_apply(self) -> dict[str, Any]:
        """Load everything staged, bucket by bucket; returns its digest and the parameter names that got no value."""
        staged = self.__dict__.pop("_rlaif_staged", [])
        with self._rlaif_reload() as reload:
            for data, index in staged:
                reload.load(list(unpack(data, index)))
        return reload.result()

    def rlaif_join(self, host: str, port: int, base_rank: int, world_size: int, timeout_s: float) -> int:
        """Join the weight group as rank `base_rank` + this worker's rank in its engine (every broadcast bounded
        by `timeout_s`); returns that rank."""
        rank = base_rank + int(getattr(self, "rank", 0))
        self.__dict__["_rlaif_group"] = open_group(host, port, rank, world_size, self._rlaif_device(),
                                                   timeout_s=timeout_s)
        return rank

    def rlaif_receive(self, plans: list[tuple[int, list]]) -> dict[str, Any]:
        """Receive the buckets the learner broadcasts, laid out as `plans` [(size, index)], loading each as it
        arrives. Returns the digest, the parameter names that got no value and `held_bytes`: the most bytes of
        received buffers alive at once, measured by their storages' finalizers (they free when the last view does).

        A failed broadcast returns {"aborted": why} (vLLM's RPC would keep only an exception's text) and drops the
        group. The engine stays usable: layers whose tensors had all arrived hold the new weights, the others
        their old ones, until the fallback sync brings the whole version.
        """
        group: WeightGroup | None = self.__dict__.get("_rlaif_group")
        if group is None or group.aborted:
            return {"aborted": "this engine is in no weight group (its last broadcast failed): rejoin first"}
        device, held = self._rlaif_device(), _HeldBytes()
        try:
            with self._rlaif_reload() as reload:
                for size, index in plans:
                    reload.load(list(unpack(held.track(group.receive(size, device)), index)))
        except BroadcastAborted as err:
            self.__dict__.pop("_rlaif_group", None)
            return {"aborted": str(err)}
        return {**reload.result(), "held_bytes": held.peak}

    def _rlaif_device(self) -> torch.device:
        device = getattr(self, "device", None)
        return torch.device(device) if device is not None else torch.device("cpu")

    @contextmanager
    def _rlaif_reload(self) -> Iterator[_Reload]:
        """One layerwise reload of the model, fed bucket by bucket (`load`) inside the `with`. On an error, the
        layers still waiting for tensors get their old weights back rather than being processed half-loaded."""
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.model_loader.reload.layerwise import (
            finalize_layerwise_reload,
            initialize_layerwise_reload,
        )

        model = self.model_runner.model
        ties = _shared_parameters(model)
        reload = _Reload(model, {name for name, _ in model.named_parameters()})
        # The reload warns "Failed to load weights" for layers that have none of their own (rotary embeddings)
        # and for a tied head (re-tied below); completeness is checked by name instead (`missing`).
        quiet = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            with set_current_vllm_config(self.vllm_config):
                initialize_layerwise_reload(model)
                try:
                    yield reload
                except BaseException:
                    _forget_partial_layers(model)
                    raise
                finally:
                    finalize_layerwise_reload(model, self.vllm_config.model_config)
                    for (owner, attr), followers in ties:
                        for module, name in followers:
                            setattr(module, name, getattr(owner, attr))
                            if hasattr(module, "quant_method"):
                                module.quant_method.process_weights_after_loading(module)
        finally:
            quiet.setLevel(level)


class _Reload:
    """What one reload has loaded so far: the digest (its three sums add up across buckets) and the names."""

    def __init__(self, model: torch.nn.Module, expected: set[str]) -> None:
        self.model, self.expected = model, expected
        self.digest, self.loaded = [0.0, 0.0, 0.0], set[str]()

    def load(self, named: list[tuple[str, torch.Tensor]]) -> None:
        """Hand one bucket's tensors to the model's loader. Keep no reference to them after: the caller passes a
        temporary, so the bucket is freed here, unless the reload holds part of it for a pending layer."""
        self.digest = [a + b for a, b in zip(self.digest, digest(named), strict=True)]
        self.loaded.update(self.model.load_weights(named) or ())

    def result(self) -> dict[str, Any]:
        return {"digest": self.digest, "missing": sorted(self.expected - self.loaded)}


class _HeldBytes:
    """Bytes of tracked buffers whose storage is alive. A finalizer on the storage, not the tensor: a tensor's
    Python object can be freed while views of it (held by the reload) keep its memory."""

    def __init__(self) -> None:
        self.now = self.peak = 0

    def track(self, buffer: torch.Tensor) -> torch.Tensor:
        nbytes = buffer.untyped_storage().nbytes()
        self.now += nbytes
        self.peak = max(self.peak, self.now)
        weakref.finalize(buffer.untyped_storage(), self._free, nbytes)
        return buffer

    def _free(self, nbytes: int) -> None:
        self.now -= nbytes


def _forget_partial_layers(model: torch.nn.Module) -> None:
    """Drop the tensors the reload buffered for layers that did not get all of theirs, so that finalizing puts
    their old weights back: processing them would leave what never arrived uninitialised."""
    from vllm.model_executor.model_loader.reload.layerwise import get_layerwise_info

    for layer in model.modules():
        info = get_layerwise_info(layer)
        if info.can_load() and info.load_numel > 0:
            info.loaded_weights.clear()
            info.load_numel = 0


def _shared_parameters(model: torch.nn.Module) -> list[tuple[tuple[Any, str], list[tuple[Any, str]]]]:
    """Parameters held by more than one module: ((first holder, attr), [(other holder, attr), ...])."""
    holders: dict[int, list[tuple[Any, str]]] = {}
    for module in model.modules():
        for attr, param in module.named_parameters(recurse=False):
            holders.setdefault(id(param), []).append((module, attr))
    return [(group[0], group[1:]) for group in holders.values() if len(group) > 1]
