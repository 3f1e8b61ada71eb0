"""Judge providers: one call to a judge model through the real SDK, with errors sorted into kinds.

`anthropic:MODEL` uses the `anthropic` SDK (Messages API; key from ANTHROPIC_API_KEY, endpoint from
ANTHROPIC_BASE_URL or the default); `openai:BASE_URL:MODEL` uses the `openai` SDK for any compatible
server (vLLM, SGLang, OpenAI; key from OPENAI_API_KEY, or "EMPTY" for local servers).

The SDKs' own retries are off: the judge retries itself, honouring `retry-after`. A `ProviderError`
says whether a retry can help (429, 5xx, timeouts, connection failures) or not (401, 400, ...). Keys
are read from the environment when the provider is built and scrubbed from every error message.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from rlaif.errors import RlaifError


@dataclass(frozen=True)
class JudgeReply:
    text: str
    tool_input: dict[str, Any] | None
    input_tokens: int
    output_tokens: int


class ProviderError(Exception):
    """A judge call failed. `retryable`: worth another attempt; `retry_after`: seconds the server asked for."""

    def __init__(self, message: str, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable, self.retry_after = retryable, retry_after


class Provider:
    """One judge endpoint. `name` (e.g. `anthropic:claude-...`) and `model` go into cache keys."""

    name: str
    model: str

    async def complete(self, system: str, user: str, max_tokens: int, temperature: float,
                       schema: dict[str, Any] | None = None) -> JudgeReply:
        """One reply. `schema`: the JSON schema the reply must follow, where the server can enforce one."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections."""


def provider_from_endpoint(endpoint: str, timeout_s: float = 60.0, extra_body: dict[str, Any] | None = None
                           ) -> Provider:
    """`anthropic:MODEL` or `openai:BASE_URL:MODEL` (`extra_body`: extra request fields, openai only)."""
    kind, _, rest = endpoint.partition(":")
    if kind == "anthropic" and rest:
        return AnthropicProvider(rest, timeout_s)
    if kind == "openai" and ":" in rest:
        base_url, _, model = rest.rpartition(":")
        if base_url and model:
            return OpenAIProvider(base_url, model, timeout_s, extra_body)
    raise RlaifError(f"judge endpoint {endpoint!r} is not anthropic:MODEL or openai:BASE_URL:MODEL "
                     "(e.g. openai:http://127.0.0.1:8000/v1:tiny)")


def _response_format(schema: dict[str, Any] | None) -> dict[str, Any]:
    """OpenAI's `response_format` for a JSON schema (vLLM enforces it with its structured-outputs backend)."""
    if schema is None:
        return {}
    return {"response_format": {"type": "json_schema",
                                "json_schema": {"name": "verdict", "schema": schema, "strict": True}}}


def _classify(err: Exception, secret: str) -> ProviderError:
    """Any failure of a call (an SDK error, or a reply the SDK could not even decode) as a ProviderError."""
    status = getattr(err, "status_code", None)
    response = getattr(err, "response", None)
    retry_after = None
    if response is not None:
        try:
            retry_after = float(response.headers.get("retry-after"))
        except (TypeError, ValueError):
            retry_after = None
    # No status (timeout, connection), 408/409/429, 5xx, or a 2xx whose body did not parse: worth retrying.
    retryable = status is None or status in (408, 409, 429) or status >= 500 or 200 <= status < 300
    message = f"{type(err).__name__}" + (f" {status}" if status else "") + f": {getattr(err, 'message', err)}"
    if secret:
        message = message.replace(secret, "***")
    return ProviderError(message[:500], retryable, retry_after)


class AnthropicProvider(Provider):
    def __init__(self, model: str, timeout_s: float = 60.0) -> None:
        from anthropic import AsyncAnthropic

        self._key = os.environ.get("ANTHROPIC_API_KEY", "")
        if not self._key:
            raise RlaifError("ANTHROPIC_API_KEY is not set; export it to use an anthropic: judge")
        self.name, self.model = f"anthropic:{model}", model
        self.client = AsyncAnthropic(api_key=self._key, max_retries=0, timeout=timeout_s)

    async def complete(self, system: str, user: str, max_tokens: int, temperature: float,
                       schema: dict[str, Any] | None = None) -> JudgeReply:
        extra = {"extra_body": {"temperature": temperature}} if temperature else {}
        try:
            response = await self.client.messages.create(
                model=self.model, system=system, max_tokens=max_tokens,
                messages=[{"role": "user", "content": user}], **extra)
        except Exception as err:
            raise _classify(err, self._key) from None
        text = "".join(b.text for b in response.content if b.type == "text")
        tool = next((dict(b.input) for b in response.content if b.type == "tool_use"), None)
        return JudgeReply(text, tool, response.usage.input_tokens, response.usage.output_tokens)

    async def close(self) -> None:
        await self.client.close()


class OpenAIProvider(Provider):
    def __init__(self, base_url: str, model: str, timeout_s: float = 60.0,
                 extra_body: dict[str, Any] | None = None) -> None:
        from openai import AsyncOpenAI

        self.extra_body = extra_body
        self._key = os.environ.get("OPENAI_API_KEY", "")
        self.name, self.model = f"openai:{base_url}:{model}", model
        self.client = AsyncOpenAI(base_url=base_url, api_key=self._key or "EMPTY", max_retries=0, timeout=timeout_s)

    async def complete(self, system: str, user: str, max_tokens: int, temperature: float,
                       schema: dict[str, Any] | None = None) -> JudgeReply:
        import json

        try:
            response = await self.client.chat.completions.create(
                model=self.model, max_tokens=max_tokens, temperature=temperature,
                messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
                extra_body=self.extra_body, **_response_format(schema))
        except Exception as err:
            raise _classify(err, self._key) from None
        if not response.choices:
            raise ProviderError("the judge returned no choices", retryable=True)
        message = response.choices[0].message
        tool = None
        if message.tool_calls:
            try:
                tool = json.loads(message.tool_calls[0].function.arguments)
            except json.JSONDecodeError:
                tool = None
        usage = response.usage
        return JudgeReply(message.content or "", tool if isinstance(tool, dict) else None,
                          usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0)

    async def close(self) -> None:
        await self.client.close()
