"""The in-process engine policy records turns token for token: the prompt ids are the chat template's rendering,
and the logprobs are the sampling logprobs, as transformers computes them for the same ids."""

from __future__ import annotations

import asyncio

import pytest

from rlaif.env import GradeContext
from rlaif.eval.evaluation import evaluate
from rlaif.policies.endpoints import Sampling, to_openai_message
from rlaif.policies.engine import EnginePolicy
from rlaif.registry import load_environment
from rlaif.sandbox.base import Limits
from rlaif.sandbox.pool import SandboxPools
from rlaif.types import Message

pytestmark = [pytest.mark.vllm, pytest.mark.docker]


def test_concurrent_episodes_record_exact_tokens_and_sampling_logprobs(tiny_model, base_image):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    env = load_environment("pyfunc", {"generated": 12})
    tasks = env.tasks("train")[:6]

    async def go():
        policy = EnginePolicy.start(str(tiny_model), max_model_len=2048)
        try:
            async with SandboxPools(Limits(), size=2, run_id="engine") as pools:
                return await evaluate(env, tasks, lambda t: policy, GradeContext(pools),
                                      Sampling(max_tokens=24, temperature=1.0, seed=3), concurrency=6)
        finally:
            await policy.close()

    trajectories = asyncio.run(go())
    model = AutoModelForCausalLM.from_pretrained(tiny_model, torch_dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    for task, traj in zip(tasks, trajectories, strict=True):
        assert traj.reward is not None and len(traj.turns) == 1
        turn = traj.turns[0]
        assert traj.status == ("truncated" if turn.finish_reason == "length" else "ok")
        rendered = tokenizer.apply_chat_template([to_openai_message(m) for m in env.prompt(task)],
                                                 add_generation_prompt=True, tokenize=True, return_dict=True)
        assert turn.prompt_ids == list(rendered["input_ids"])
        assert 0 < len(turn.completion_ids) == len(turn.logprobs) == len(turn.loss_mask) <= 24
        assert traj.messages[-1].content == tokenizer.decode(turn.completion_ids, skip_special_tokens=True)
        ids = torch.tensor([turn.prompt_ids + turn.completion_ids])
        with torch.no_grad():
            logits = model(ids).logits[0, len(turn.prompt_ids) - 1:-1]
        expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(turn.completion_ids)[:, None])[:, 0]
        assert torch.allclose(expected, torch.tensor(turn.logprobs), atol=2e-3), (expected, turn.logprobs)


def _vllm_processes() -> dict[int, str]:
    """This process's descendants that vLLM started (it titles them VLLM::EngineCore, VLLM::Worker...), by pid."""
    import psutil

    titles = {child.pid: " ".join(child.cmdline()) for child in psutil.Process().children(recursive=True)}
    return {pid: title for pid, title in titles.items() if title.startswith("VLLM")}


def test_the_learner_scores_tokens_as_the_engine_sampled_them_at_temperature_0_7(tiny_model, monkeypatch):
    """At T=0.7 the engine reports the sampling distribution's logprobs and the learner, scoring at the same
    temperature, matches them; scoring at T=1 (the old behaviour) would not. Left to itself on the CPU, the engine is
    one process apart from the caller's: its engine core runs the model, with no worker process of its own."""
    import torch

    from rlaif.policies.engine import CPU_MULTIPROCESSING
    from rlaif.train.learner import Learner, Sample

    monkeypatch.delenv(CPU_MULTIPROCESSING, raising=False)  # the suite sets it for its other engines

    async def go():
        others = _vllm_processes()  # the session's servers, say
        policy = EnginePolicy.start(str(tiny_model), max_model_len=512)
        try:
            processes = [title for pid, title in _vllm_processes().items() if pid not in others]
            assert len(processes) == 1 and processes[0].startswith("VLLM::EngineCore"), processes
            ask = [Message(role="user", content="Write a function that adds two numbers.")]
            # No per-request seed: the CPU build's engine dies on one (see rlaif.cluster.rollout_worker).
            return await asyncio.gather(*(policy.complete(ask, [], Sampling(max_tokens=16, temperature=0.7))
                                          for _ in range(4)))
        finally:
            await policy.close()

    completions = asyncio.run(go())
    samples = [Sample(c.turn.prompt_ids, c.turn.completion_ids, c.turn.logprobs, c.turn.loss_mask, 0.0)
               for c in completions if c.turn.completion_ids]
    assert samples
    engine = [torch.tensor(s.behaviour_logprobs) for s in samples]
    for temperature, matches in ((0.7, True), (1.0, False)):
        learner = Learner(str(tiny_model), temperature=temperature)
        with torch.no_grad():
            scored, _ = learner.token_logprobs(learner.model, samples)
        close = [torch.allclose(scored[i, :len(e)], e, atol=2e-3) for i, e in enumerate(engine)]
        assert all(close) if matches else not any(close), (temperature, close)
