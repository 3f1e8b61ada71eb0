"""A vLLM plugin (entry point `vllm.general_plugins`, so it runs in every vLLM process, engine cores and workers
included) that, with `RLAIF_VLLM_CPU_GEMM=torch`, keeps vLLM's CPU linear layers as loaded.

By default vLLM on the CPU hands each linear layer's weight, once loaded, to a faster kernel (oneDNN; on AMX
CPUs in bf16, sgl-kernel; zentorch on AMD Zen when installed) and replaces the parameter with an empty one that
has no `weight_loader`. Code that later writes weights with the model's own `load_weights` then fails (TRL's
colocate `sync_weights`: `AttributeError: 'Parameter' object has no attribute 'weight_loader'`). rlaif's weight path
reloads through vLLM's layerwise reload (`rlaif.weights.engine_extension`), which re-packs after loading, and works
either way. With `torch`, every such layer keeps its parameter and runs `torch.nn.functional.linear` on it, at the
cost of the faster kernels; `benchmarks/vs_trl.py` sets it for both trainers alike.
"""

from __future__ import annotations

import os

ENV = "RLAIF_VLLM_CPU_GEMM"


def apply() -> None:
    """Install the setting `RLAIF_VLLM_CPU_GEMM` asks for: unset or `auto` changes nothing."""
    mode = os.environ.get(ENV, "auto")
    if mode == "auto":
        return
    if mode != "torch":
        raise ValueError(f"{ENV}={mode!r} is not a setting; use 'torch' (keep linear weights as loaded) or 'auto'")
    import torch
    from vllm.model_executor.layers import utils

    if getattr(utils.dispatch_cpu_unquantized_gemm, "keeps_weights", False):
        return  # loaded twice in this process
    packing = utils.dispatch_cpu_unquantized_gemm

    def keep_weights(layer: torch.nn.Module, remove_weight: bool) -> None:
        if layer.weight.ndim == 2:
            layer.cpu_linear = torch.nn.functional.linear
        else:
            packing(layer, remove_weight)

    keep_weights.keeps_weights = True
    utils.dispatch_cpu_unquantized_gemm = keep_weights
