"""`RLAIF_VLLM_CPU_GEMM=torch` (the vLLM plugin in `rlaif.policies.vllm_cpu`): a real vLLM engine keeps its linear
weights as loaded, so writing new ones with the model's own `load_weights` (TRL's colocate sync) works and changes
what it generates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from rlaif.policies import vllm_cpu

ENGINE = """
import json, sys, torch
from transformers import AutoModelForCausalLM
from vllm import LLM, SamplingParams
path = sys.argv[1]
llm = LLM(model=path, dtype="float32", enforce_eager=True, gpu_memory_utilization=0.1, max_model_len=256, seed=0)
model = llm.llm_engine.model_executor.driver_worker.model_runner.model
qkv = model.model.layers[0].self_attn.qkv_proj.weight
greedy = SamplingParams(temperature=0.0, max_tokens=8)
before = llm.generate([{"prompt_token_ids": [5, 6, 7]}], greedy)[0].outputs[0].token_ids
hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
for name, param in hf.named_parameters():  # as TRL's sync_weights does, one tensor at a time
    model.load_weights([(name, param.data.flip(0) if "mlp" in name else param.data)])
llm.reset_prefix_cache()
after = llm.generate([{"prompt_token_ids": [5, 6, 7]}], greedy)[0].outputs[0].token_ids
print(json.dumps({"shape": list(qkv.shape), "loader": hasattr(qkv, "weight_loader"), "before": list(before),
                  "after": list(after)}))
"""


def test_the_plugin_is_registered_with_vllm():
    assert "rlaif.policies.vllm_cpu:apply" in {e.value for e in entry_points(group="vllm.general_plugins")}


def test_an_unknown_setting_is_refused_by_name(monkeypatch):
    monkeypatch.setenv(vllm_cpu.ENV, "fast")
    with pytest.raises(ValueError, match="RLAIF_VLLM_CPU_GEMM='fast' is not a setting; use 'torch'"):
        vllm_cpu.apply()


def test_load_weights_writes_into_the_engine_with_torch_gemm(tiny_model):
    env = {**os.environ, vllm_cpu.ENV: "torch", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    run = subprocess.run([sys.executable, "-c", ENGINE, str(tiny_model)], capture_output=True, text=True, env=env,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["shape"][0] > 0 and seen["loader"], "the weight is kept as loaded, with its loader"
    assert seen["before"] != seen["after"], "generation reads the weights just written, not a packed copy"
