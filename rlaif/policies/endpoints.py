"""Policies: what produces the assistant's turns. One interface, several kinds.

- `OpenAIPolicy`: any OpenAI-compatible chat endpoint (vLLM, SGLang, OpenAI) through the `openai` SDK.
- `AnthropicPolicy`: Claude (or any server speaking the Messages API) through the `anthropic` SDK.
- `ReplayPolicy`: scripted assistant turns (a task's reference solution; `rlaif env check`).
- the in-process vLLM engine of the training workers (arrives with issue #6) returns, besides the text,
  the exact token ids and sampling logprobs of each turn in `Completion.turn`.

When an endpoint returns structured tool calls, they are used; otherwise the text is parsed with the
configured tool-call parser (`rlaif.rollout.toolcalls`). An endpoint that cannot be reached after the SDK's
retries raises `PolicyError`: an infrastructure failure, never a score. API keys are read from the
environment and appear in no message.
"""

from __future__ import annotations

import json
import os
from typing import Any

from pydantic import BaseModel, Field

from rlaif.errors import RlaifError
from rlaif.types import Message, ToolCall, Turn


class PolicyError(RlaifError):
    """The policy endpoint failed (unreachable, 5xx after retries, malformed reply)."""


class Sampling(BaseModel):
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None


class Completion(BaseModel):
    """One assistant turn. `tool_calls` is None when the endpoint gave no structured calls."""

    text: str
    tool_calls: list[ToolCall] | None = None
    finish_reason: str | None = None
    usage: dict[str, int] = Field(default_factory=dict)
    turn: Turn | None = None
    """Token-exact record of the turn, from in-process engines only."""


class Policy:
    name = "policy"

    async def complete(self, messages: list[Message], tools: list[dict[str, Any]], sampling: Sampling,
                       history: list[int] | None = None) -> Completion:
        """The next assistant turn. `history`: this episode's token ids so far (the last turn's prompt and
        completion), which a token-exact policy extends instead of rendering the conversation afresh; endpoints
        that work on text ignore it."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections."""


class OpenAIPolicy(Policy):
    """An OpenAI-compatible chat endpoint. The key comes from `api_key_env` (default OPENAI_API_KEY)."""

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 120.0,
                 max_retries: int = 2, extra_body: dict[str, Any] | None = None) -> None:
        """`extra_body`: server-specific request fields (vLLM: top_k, structured_outputs, ...)."""
        from openai import AsyncOpenAI

        self.name, self.model, self.base_url = f"openai:{base_url}:{model}", model, base_url
        self.extra_body = extra_body
        self.client = AsyncOpenAI(base_url=base_url, api_key=os.environ.get(api_key_env) or "EMPTY",
                                  timeout=timeout_s, max_retries=max_retries)
        self.server_parses_tools = True
        """False once the server said it cannot parse tool calls (vLLM without --tool-call-parser): then
        tools are still rendered into the prompt (`tool_choice="none"`) and calls are parsed from the text."""

    async def complete(self, messages: list[Message], tools: list[dict[str, Any]], sampling: Sampling,
                       history: list[int] | None = None) -> Completion:
        import openai

        request = {"model": self.model, "messages": [to_openai_message(m) for m in messages], "top_p": sampling.top_p,
                   "temperature": sampling.temperature, "max_tokens": sampling.max_tokens, "seed": sampling.seed,
                   "extra_body": self.extra_body}
        if tools:
            request["tools"] = tools
            if not self.server_parses_tools:
                request["tool_choice"] = "none"
        try:
            try:
                response = await self.client.chat.completions.create(**request)
            except openai.BadRequestError as err:
                if not tools or "tool" not in str(err.message) or not self.server_parses_tools:
                    raise
                self.server_parses_tools = False
                response = await self.client.chat.completions.create(**request, tool_choice="none")
        except openai.APIError as err:
            raise PolicyError(f"policy endpoint {self.base_url} failed: {type(err).__name__}: "
                              f"{getattr(err, 'message', err)}") from None
        if not response.choices:
            raise PolicyError(f"policy endpoint {self.base_url} returned no choices")
        choice = response.choices[0]
        calls = None
        if choice.message.tool_calls:
            calls = [ToolCall(id=c.id, name=c.function.name, arguments=_json_object(c.function.arguments))
                     for c in choice.message.tool_calls]
        usage = response.usage.model_dump(include={"prompt_tokens", "completion_tokens"}) if response.usage else {}
        return Completion(text=choice.message.content or "", tool_calls=calls, finish_reason=choice.finish_reason,
                          usage=usage)

    async def close(self) -> None:
        await self.client.close()


class AnthropicPolicy(Policy):
    """The Messages API. Key from ANTHROPIC_API_KEY; endpoint from ANTHROPIC_BASE_URL or the SDK default."""

    def __init__(self, model: str, base_url: str | None = None, timeout_s: float = 120.0, max_retries: int = 2) -> None:
        from anthropic import AsyncAnthropic

        if not os.environ.get("ANTHROPIC_API_KEY"):
            raise RlaifError("ANTHROPIC_API_KEY is not set; export it to use an anthropic: policy")
        self.name, self.model = f"anthropic:{model}", model
        self.client = AsyncAnthropic(base_url=base_url, timeout=timeout_s, max_retries=max_retries)
        self.base_url = str(self.client.base_url)
        self.server_parses_tools = True
        """As for OpenAIPolicy: False once the server said it cannot emit tool_use blocks."""

    async def complete(self, messages: list[Message], tools: list[dict[str, Any]], sampling: Sampling,
                       history: list[int] | None = None) -> Completion:
        import anthropic

        system = "\n\n".join(m.content for m in messages if m.role == "system")
        kwargs: dict[str, Any] = {"system": system} if system else {}
        if sampling.temperature != 1.0:
            # The SDK no longer takes sampling parameters; servers that honour them read the body.
            kwargs["extra_body"] = {"temperature": sampling.temperature}
        if tools:
            kwargs["tools"] = [{"name": t["function"]["name"], "description": t["function"].get("description", ""),
                                "input_schema": t["function"].get("parameters", {"type": "object"})} for t in tools]
            if not self.server_parses_tools:
                kwargs["tool_choice"] = {"type": "none"}
        request = {"model": self.model, "messages": _to_anthropic([m for m in messages if m.role != "system"]),
                   "max_tokens": sampling.max_tokens, **kwargs}
        try:
            try:
                response = await self.client.messages.create(**request)
            except anthropic.BadRequestError as err:
                if not tools or "tool" not in str(err.message) or not self.server_parses_tools:
                    raise
                self.server_parses_tools = False
                response = await self.client.messages.create(**request, tool_choice={"type": "none"})
        except anthropic.APIError as err:
            raise PolicyError(f"policy endpoint {self.base_url} failed: {type(err).__name__}: "
                              f"{getattr(err, 'message', err)}") from None
        text = "".join(block.text for block in response.content if block.type == "text")
        calls = [ToolCall(id=b.id, name=b.name, arguments=dict(b.input)) for b in response.content
                 if b.type == "tool_use"]
        finish = {"max_tokens": "length", "tool_use": "tool_calls"}.get(response.stop_reason or "", "stop")
        usage = {"prompt_tokens": response.usage.input_tokens, "completion_tokens": response.usage.output_tokens}
        return Completion(text=text, tool_calls=calls or None, finish_reason=finish, usage=usage)

    async def close(self) -> None:
        await self.client.close()


class ReplayPolicy(Policy):
    """Plays scripted assistant turns in order, then empty answers. Tool calls are kept structured."""

    name = "reference"

    def __init__(self, turns: list[Message]) -> None:
        self.turns = list(turns)

    async def complete(self, messages: list[Message], tools: list[dict[str, Any]], sampling: Sampling,
                       history: list[int] | None = None) -> Completion:
        turn = self.turns.pop(0) if self.turns else Message(role="assistant", content="")
        return Completion(text=turn.content, tool_calls=list(turn.tool_calls) or None, finish_reason="stop")


def policy_from_spec(spec: str) -> Policy:
    """`openai:BASE_URL:MODEL` or `anthropic:MODEL` (the model is what follows the last colon)."""
    kind, _, rest = spec.partition(":")
    if kind == "openai" and ":" in rest:
        base_url, _, model = rest.rpartition(":")
        if base_url and model:
            return OpenAIPolicy(base_url, model)
    if kind == "anthropic" and rest:
        return AnthropicPolicy(rest)
    raise RlaifError(f"policy {spec!r} is not openai:BASE_URL:MODEL or anthropic:MODEL "
                     "(e.g. openai:http://127.0.0.1:8000/v1:tiny)")


def _json_object(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return {"__invalid_json__": arguments}
    return value if isinstance(value, dict) else {"__invalid_json__": arguments}


def to_openai_message(message: Message) -> dict[str, Any]:
    """A Message in the OpenAI chat (and chat-template) form; tool-call arguments as a JSON string."""
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [{"id": c.id, "type": "function",
                              "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
                             for c in message.tool_calls]
    if message.role == "tool":
        out["tool_call_id"] = message.tool_call_id or ""
    return out


def _to_anthropic(messages: list[Message]) -> list[dict[str, Any]]:
    """Messages API form: tool calls are tool_use blocks, tool results are tool_result blocks in a user turn."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            block = {"type": "tool_result", "tool_use_id": m.tool_call_id or "", "content": m.content}
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
        elif m.role == "assistant" and m.tool_calls:
            blocks: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
            blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in m.tool_calls]
            out.append({"role": "assistant", "content": blocks})
        else:
            out.append({"role": m.role, "content": m.content or " "})
    return out
