"""The student's own policy: an in-process vLLM engine that records every turn token for token.

Each call renders the conversation with the model's chat template (tools included) into prompt token
ids, samples with `logprobs=0`, and returns, besides the text, a `Turn` holding the exact prompt ids the
engine saw, the ids it sampled and their sampling logprobs. The learner trains each turn on exactly those
ids: it never re-tokenises text. A multi-turn episode's later prompts are rendered afresh from the
conversation; that is what the engine saw for that turn, so each turn is exact on its own.

Concurrent episodes share one `AsyncLLM` engine, which batches their requests continuously.
`weight_version` is stamped by the caller (the rollout worker) on the trajectory.
"""

from __future__ import annotations

import gc
import itertools
from typing import Any

from rlaif.policies.endpoints import Completion, Policy, Sampling, to_openai_message
from rlaif.types import Message, Turn

_request_ids = itertools.count()


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
        at the same temperature; vLLM's default would be the raw model's, right only at temperature 1."""
        from transformers import AutoTokenizer
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        engine_args.setdefault("logprobs_mode", "processed_logprobs")
        args = AsyncEngineArgs(model=model, dtype=dtype, enforce_eager=True, seed=seed,
                               gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                               **engine_args)
        return cls(AsyncLLM.from_engine_args(args), AutoTokenizer.from_pretrained(model))

    def render(self, messages: list[Message], tools: list[dict[str, Any]]) -> list[int]:
        """The prompt token ids for the next assistant turn."""
        rendered = self.tokenizer.apply_chat_template([to_openai_message(m) for m in messages], tools=tools or None,
                                                      add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(rendered["input_ids"])

    async def complete(self, messages: list[Message], tools: list[dict[str, Any]], sampling: Sampling) -> Completion:
        from vllm import SamplingParams, TokensPrompt

        prompt_ids = self.render(messages, tools)
        params = SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p,
                                max_tokens=sampling.max_tokens, seed=sampling.seed, logprobs=0)
        final = None
        async for output in self.engine.generate(TokensPrompt(prompt_token_ids=prompt_ids), params,
                                                 request_id=f"rlaif-{next(_request_ids)}"):
            final = output
        sample = final.outputs[0]
        ids = list(sample.token_ids)
        logprobs = [step[token].logprob for step, token in zip(sample.logprobs, ids, strict=True)]
        turn = Turn(prompt_ids=prompt_ids, completion_ids=ids, logprobs=logprobs, loss_mask=[1] * len(ids),
                    finish_reason=sample.finish_reason)
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
