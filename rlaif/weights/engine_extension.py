"""The engine side of weight sync, mixed into vLLM's worker (`worker_extension_cls`, see `WORKER_EXTENSION`).

Called through `engine.collective_rpc(name, args=...)` in every worker process of an engine. Weights arrive
bucket by bucket while the engine keeps generating, either as host bytes (`rlaif_stage`, the object-store
path) or as a broadcast in the weight group (`rlaif_join` once, then `rlaif_receive`); `rlaif_apply` then
swaps everything staged in one call. The swap must be one call: the engine runs its forward steps between
calls, and mid-reload the layers are placeholders (meta tensors) that a forward step would crash on.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from rlaif.weights.buckets import Plan, digest, unpack
from rlaif.weights.group import open_group, receive

WORKER_EXTENSION = "rlaif.weights.engine_extension.WorkerExtension"


class WorkerExtension:
    """Loading goes through vLLM's in-place layerwise reload, which restores each layer to checkpoint format,
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

    def _rlaif_staged(self) -> list[tuple[str, torch.Tensor]]:
        return self.__dict__.setdefault("_rlaif_staged_tensors", [])

    def rlaif_stage(self, data: bytes, index: list) -> int:
        """Keep one host bucket until `rlaif_apply`; returns the number of tensors in it."""
        tensors = list(unpack(data, index))
        self._rlaif_staged().extend(tensors)
        return len(tensors)

    def rlaif_join(self, host: str, port: int, base_rank: int, world_size: int) -> int:
        """Join the weight group as rank `base_rank` + this worker's rank in its engine; returns that rank."""
        rank = base_rank + int(getattr(self, "rank", 0))
        self.__dict__["_rlaif_group"] = open_group(host, port, rank, world_size, self._rlaif_device())
        return rank

    def rlaif_receive(self, plans: list[tuple[int, list]]) -> int:
        """Receive the buckets the learner broadcasts, laid out as `plans` [(size, index)]; stage their tensors."""
        layout = [Plan(size, index) for size, index in plans]
        count = 0
        for bucket, buffer in zip(layout, receive(self.__dict__["_rlaif_group"], layout, self._rlaif_device()),
                                  strict=True):
            tensors = list(unpack(buffer, bucket.index))
            self._rlaif_staged().extend(tensors)
            count += len(tensors)
        return count

    def _rlaif_device(self) -> torch.device:
        device = getattr(self, "device", None)
        return torch.device(device) if device is not None else torch.device("cpu")

    def rlaif_apply(self) -> dict[str, Any]:
        """Load everything staged; returns its digest and the parameter names that got no value."""
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.model_loader.reload.layerwise import (
            finalize_layerwise_reload,
            initialize_layerwise_reload,
        )

        model, staged = self.model_runner.model, self.__dict__.pop("_rlaif_staged_tensors", [])
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
