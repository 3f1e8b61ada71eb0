"""The student's own policy: an in-process vLLM engine that records every turn token for token.

Each call renders the conversation with the model's chat template (tools included) into prompt token
ids, samples with `logprobs=0`, and returns, besides the text, a `Turn` holding the exact prompt ids the
engine saw, the ids it sampled and their sampling logprobs. The learner trains on exactly those ids: it never
re-tokenises text. A later turn of an episode extends the sequence so far, token for token (`continuation`):
the previous turn's prompt and sampled ids, the template's end of that turn, the new messages (tool results)
and the next generation prompt, as the chat template renders them. Rendering the whole conversation afresh
would re-tokenise the sampled text, which need not give back the sampled ids; extending it makes an episode
one sequence, which the learner trains as one sample. When the template does not render the conversation as
a prefix of its continuation (one that rewrites earlier turns), the turn is rendered afresh and starts a new
sequence.

Concurrent episodes share one `AsyncLLM` engine, which batches their requests continuously.
`weight_version` is stamped by the caller (the rollout worker) on the trajectory.
"""

from __future__ import annotations

import gc
import itertools
import os
from typing import Any

from rlaif.policies.endpoints import Completion, Policy, Sampling, to_openai_message
from rlaif.types import Message, Turn

_request_ids = itertools.count()
# On the CPU build, vLLM's default KV cache is gpu_memory_utilization x the machine's memory less the engine
# process's own RSS, so a 0.5 GB model at 0.1 gets almost none; a fixed size does not depend on what else is loaded.
CPU_KV_CACHE_BYTES = 1 << 30
# On the CPU build, VLLM_ENABLE_V1_MULTIPROCESSING=1 (vLLM's default) makes the engine core run the model in a worker
# process of its own; at 0 the engine core (still a process apart from the caller's: AsyncLLM always has one) runs it.
# One process fewer to import vLLM and poll the same cores: on 2 cores, start-up 10-19 s shorter and 1.5x the tokens/s
# (benchmarks/results/engine_cpu.md). Set it to 1 to get vLLM's default back.
CPU_MULTIPROCESSING = "VLLM_ENABLE_V1_MULTIPROCESSING"


def cpu_engine_args(engine_args: dict[str, Any]) -> dict[str, Any]:
    """`engine_args` with what any vLLM engine needs on the CPU build (unchanged elsewhere): the engine core runs the
    model itself (`CPU_MULTIPROCESSING`, set in the environment unless it is set) and the KV cache is
    `CPU_KV_CACHE_BYTES` unless `kv_cache_memory_bytes` or VLLM_CPU_KVCACHE_SPACE says otherwise."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return engine_args
    os.environ.setdefault(CPU_MULTIPROCESSING, "0")
    if os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        return engine_args
    return {"kv_cache_memory_bytes": CPU_KV_CACHE_BYTES, **engine_args}


class EnginePolicy(Policy):
    """Generates with an in-process vLLM `AsyncLLM`; build it with `EnginePolicy.start(model_dir, ...)`."""

    name = "engine"

    def __init__(self, engine: Any, tokenizer: Any) -> None:
        self.engine, self.tokenizer = engine, tokenizer

    @classmethod
    def start(cls, model: str, dtype: str = "float32", gpu_memory_utilization: float = 0.1, seed: int = 0,
              max_model_len: int | None = None, **engine_args: Any) -> EnginePolicy:
        """Start an engine on a Hugging Face model directory (eager mode: no graph capture on the CPU build).

        Logprobs are the sampling distribution's (`processed_logprobs`: after temperature), what the learner scores
        at the same temperature; vLLM's default would be the raw model's, right only at temperature 1. On the CPU,
        `cpu_engine_args` applies."""
        from transformers import AutoTokenizer
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        engine_args.setdefault("logprobs_mode", "processed_logprobs")
        args = AsyncEngineArgs(model=model, dtype=dtype, enforce_eager=True, seed=seed,
                               gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                               **cpu_engine_args(engine_args))
        return cls(AsyncLLM.from_engine_args(args), AutoTokenizer.from_pretrained(model))

    def render(self, messages: list[Message], tools: list[dict[str, Any]], next_turn: bool = True) -> list[int]:
        """The conversation's token ids, with the prompt for the next assistant turn when `next_turn`."""
        rendered = self.tokenizer.apply_chat_template([to_openai_message(m) for m in messages], tools=tools or None,
                                                      add_generation_prompt=next_turn, tokenize=True, return_dict=True)
        return list(rendered["input_ids"])

    def continuation(self, messages: list[Message], tools: list[dict[str, Any]],
                     history: list[int]) -> list[int] | None:
        """The ids that follow `history` (which ends with the last assistant turn's sampled ids) to prompt the next
        turn: the rest of that turn as the template ends it (its end-of-turn token when sampling stopped
        before it, what the template puts after it), then the messages after it and the generation prompt. None
        when the template's rendering of the conversation up to that turn is not a prefix of its rendering of
        the whole (then there is no one sequence to extend)."""
        last = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=None)
        if last is None:
            return None
        before = self.render(messages[:last], tools)
        closed = self.render(messages[:last + 1], tools, next_turn=False)
        whole = self.render(messages, tools)
        if closed[:len(before)] != before or whole[:len(closed)] != closed:
            return None
        special = set(self.tokenizer.all_special_ids)
        end = max((i for i in range(len(before), len(closed)) if closed[i] in special), default=None)
        if end is None:
            return None
        stop = [] if history and history[-1] == closed[end] else [closed[end]]
        return stop + closed[end + 1:] + whole[len(closed):]

    async def complete(self, messages: list[Message], tools: list[dict[str, Any]], sampling: Sampling,
                       history: list[int] | None = None) -> Completion:
        from vllm import SamplingParams, TokensPrompt

        extra = self.continuation(messages, tools, history) if history else None
        prompt_ids = history + extra if extra is not None else self.render(messages, tools)
        params = SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p,
                                max_tokens=sampling.max_tokens, seed=sampling.seed, logprobs=0)
        final = None
        async for output in self.engine.generate(TokensPrompt(prompt_token_ids=prompt_ids), params,
                                                 request_id=f"rlaif-{next(_request_ids)}"):
            final = output
        sample = final.outputs[0]
        ids = list(sample.token_ids)
        logprobs = [step[token].logprob for step, token in zip(sample.logprobs, ids, strict=True)]
        turn = Turn(prompt_ids=prompt_ids if extra is None else extra, completion_ids=ids, logprobs=logprobs,
                    loss_mask=[1] * len(ids), finish_reason=sample.finish_reason, continues=extra is not None)
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Completion(text=text, finish_reason=sample.finish_reason, turn=turn,
                          usage={"prompt_tokens": len(prompt_ids), "completion_tokens": len(ids)})

    async def prompt_logprobs(self, ids: list[int]) -> list[float]:
        """The engine's logprob of each token of `ids` after the first, given the ones before it (temperature 1)."""
        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0)
        final = None
        async for output in self.engine.generate(TokensPrompt(prompt_token_ids=ids), params,
                                                 request_id=f"rlaif-probe-{next(_request_ids)}"):
            final = output
        return [step[token].logprob for step, token in zip(final.prompt_logprobs[1:], ids[1:], strict=True)]

    async def close(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
            # Drop it now: AsyncLLM.__del__ shuts down again, which fails noisily at interpreter exit.
            self.engine = None
            gc.collect()
