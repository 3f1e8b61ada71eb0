"""The fault-injection judge endpoint, driven through the real openai and anthropic SDK clients."""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import time
import urllib.error
import urllib.request

import anthropic
import openai
import pytest

from tests.support.fault_server import JudgeEndpoint, Reply

pytestmark = pytest.mark.unit
MESSAGES = [{"role": "user", "content": "Grade this answer."}]
TOOLS_OPENAI = [{"type": "function", "function": {"name": "verdict", "parameters": {"type": "object"}}}]
TOOLS_ANTHROPIC = [{"name": "verdict", "input_schema": {"type": "object"}}]


def _openai(endpoint: JudgeEndpoint, timeout: float = 10.0) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{endpoint.url}/v1", api_key="sk-test", max_retries=0, timeout=timeout)


def _anthropic(endpoint: JudgeEndpoint, timeout: float = 10.0) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=endpoint.url, api_key="ak-test", max_retries=0, timeout=timeout)


def _ask_openai(endpoint: JudgeEndpoint, timeout: float = 10.0, **extra):
    return _openai(endpoint, timeout).chat.completions.create(model="gpt-judge", messages=MESSAGES, **extra)


def _ask_anthropic(endpoint: JudgeEndpoint, timeout: float = 10.0, **extra):
    return _anthropic(endpoint, timeout).messages.create(model="claude-judge", max_tokens=64, messages=MESSAGES,
                                                         **extra)


def test_both_sdks_parse_a_text_reply_and_the_requests_are_recorded():
    with JudgeEndpoint(Reply(text='{"score": 4}', input_tokens=321, output_tokens=7)) as endpoint:
        completion = _ask_openai(endpoint)
        message = _ask_anthropic(endpoint)

    assert completion.model == "gpt-judge"
    assert completion.choices[0].message.content == '{"score": 4}'
    assert completion.choices[0].finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (
        321, 7, 328)
    assert message.model == "claude-judge"
    assert [(block.type, block.text) for block in message.content] == [("text", '{"score": 4}')]
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (321, 7)

    first, second = endpoint.requests
    assert (first["protocol"], first["path"], first["body"]["model"]) == ("openai", "/v1/chat/completions", "gpt-judge")
    assert first["body"]["messages"] == MESSAGES
    assert first["headers"]["authorization"] == "Bearer sk-test"
    assert (second["protocol"], second["path"]) == ("anthropic", "/v1/messages")
    assert second["body"]["model"] == "claude-judge"
    assert second["body"]["messages"] == MESSAGES
    assert second["headers"]["authorization"] == "Bearer ak-test"  # this SDK (2.x) sends the key so, not x-api-key
    assert "anthropic-version" in second["headers"]
    assert first["time"] <= second["time"]


def test_both_sdks_parse_a_tool_reply():
    verdict = {"score": 2, "reason": "off by one"}
    with JudgeEndpoint(Reply(kind="tool", tool_input=verdict)) as endpoint:
        completion = _ask_openai(endpoint, tools=TOOLS_OPENAI)
        message = _ask_anthropic(endpoint, tools=TOOLS_ANTHROPIC)

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert (call.type, call.function.name, json.loads(call.function.arguments)) == ("function", "verdict", verdict)
    assert message.stop_reason == "tool_use"
    (block,) = message.content
    assert isinstance(block, anthropic.types.ToolUseBlock)
    assert (block.name, block.input) == ("verdict", verdict)
    assert block.id.startswith("toolu_")


def test_429_raises_rate_limit_errors_with_retry_after_and_500_internal_server_errors():
    with JudgeEndpoint(Reply(kind="status", status=429, retry_after=2)) as endpoint:
        with pytest.raises(openai.RateLimitError) as openai_error:
            _ask_openai(endpoint)
        with pytest.raises(anthropic.RateLimitError) as anthropic_error:
            _ask_anthropic(endpoint)
    assert openai_error.value.status_code == anthropic_error.value.status_code == 429
    assert openai_error.value.response.headers["retry-after"] == "2"
    assert anthropic_error.value.response.headers["retry-after"] == "2"
    assert openai_error.value.code == "rate_limit_exceeded"
    assert anthropic_error.value.body["error"]["type"] == "rate_limit_error"

    with JudgeEndpoint(Reply(kind="status", status=500)) as endpoint:
        with pytest.raises(openai.InternalServerError) as openai_error:
            _ask_openai(endpoint)
        with pytest.raises(anthropic.InternalServerError) as anthropic_error:
            _ask_anthropic(endpoint)
    assert "retry-after" not in openai_error.value.response.headers
    assert anthropic_error.value.body == {"type": "error", "error": {"type": "api_error",
                                                                     "message": "scripted status 500"}}


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_an_unparseable_200_body_raises_a_bare_json_decode_error_from_both_sdks(kind):
    # Neither SDK wraps it: the caller sees json.JSONDecodeError, not an openai/anthropic APIError.
    with JudgeEndpoint(Reply(kind=kind)) as endpoint:
        with pytest.raises(json.JSONDecodeError) as openai_error:
            _ask_openai(endpoint)
        with pytest.raises(json.JSONDecodeError) as anthropic_error:
            _ask_anthropic(endpoint)
    assert type(openai_error.value) is type(anthropic_error.value) is json.JSONDecodeError
    assert len(endpoint.requests) == 2


def test_a_hang_ends_in_each_sdks_timeout_error_and_stop_does_not_wait_for_it():
    with JudgeEndpoint(Reply(kind="hang", delay_s=60)) as endpoint:
        for ask, timeout_error in ((_ask_openai, openai.APITimeoutError), (_ask_anthropic, anthropic.APITimeoutError)):
            started = time.monotonic()
            with pytest.raises(timeout_error):
                ask(endpoint, timeout=1.0)
            assert 0.9 < time.monotonic() - started < 2.0
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 1.0


def test_a_hang_without_delay_drops_the_connection():
    with JudgeEndpoint(Reply(kind="hang")) as endpoint:
        with pytest.raises(openai.APIConnectionError) as openai_error:
            _ask_openai(endpoint)
        with pytest.raises(anthropic.APIConnectionError) as anthropic_error:
            _ask_anthropic(endpoint)
    assert not isinstance(openai_error.value, openai.APITimeoutError)
    assert not isinstance(anthropic_error.value, anthropic.APITimeoutError)


def test_a_sequence_script_is_consumed_in_order_the_last_repeating_and_reset_restarts_it():
    script = [Reply(kind="status", status=429, retry_after=0.5), Reply(text="second")]
    with JudgeEndpoint(script) as endpoint:
        with pytest.raises(openai.RateLimitError):
            _ask_openai(endpoint)
        assert _ask_openai(endpoint).choices[0].message.content == "second"
        assert _ask_anthropic(endpoint).content[0].text == "second"
        assert len(endpoint.requests) == 3
        endpoint.reset()
        assert endpoint.requests == []
        with pytest.raises(anthropic.RateLimitError) as error:
            _ask_anthropic(endpoint)
    assert error.value.response.headers["retry-after"] == "0.5"


def test_a_callable_script_sees_each_request():
    def script(request: dict) -> Reply:
        return Reply(text=f'{request["protocol"]}:{request["body"]["messages"][-1]["content"]}')

    with JudgeEndpoint(script) as endpoint:
        assert _ask_openai(endpoint).choices[0].message.content == "openai:Grade this answer."
        assert _ask_anthropic(endpoint).content[0].text == "anthropic:Grade this answer."


def test_other_paths_get_404_and_a_non_json_body_gets_400_without_consuming_the_script():
    with JudgeEndpoint([Reply(text="first"), Reply(text="second")]) as endpoint:
        for method, path in (("GET", "/v1/models"), ("POST", "/v1/completions"), ("GET", "/v1/messages")):
            request = urllib.request.Request(f"{endpoint.url}{path}", method=method, data=b"{}" if method == "POST"
                                             else None)
            with pytest.raises(urllib.error.HTTPError) as error:
                urllib.request.urlopen(request, timeout=5)
            assert error.value.code == 404
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(urllib.request.Request(f"{endpoint.url}/v1/messages", data=b"not json"), timeout=5)
        assert error.value.code == 400
        assert json.load(error.value)["error"]["type"] == "invalid_request_error"
        assert _ask_openai(endpoint).choices[0].message.content == "first"
    assert [request["body"] is None for request in endpoint.requests] == [True, False]


def test_requests_are_served_concurrently_not_serialised():
    delay, total, concurrency = 0.5, 64, 32

    async def one(client: openai.AsyncOpenAI, gate: asyncio.Semaphore) -> float:
        async with gate:
            started = time.monotonic()
            await client.chat.completions.create(model="gpt-judge", messages=MESSAGES)
            return time.monotonic() - started

    async def run(endpoint: JudgeEndpoint) -> tuple[float, list[float]]:
        gate = asyncio.Semaphore(concurrency)
        async with openai.AsyncOpenAI(base_url=f"{endpoint.url}/v1", api_key="sk-test", max_retries=0) as client:
            started = time.monotonic()
            latencies = await asyncio.gather(*(one(client, gate) for _ in range(total)))
            return time.monotonic() - started, latencies

    with JudgeEndpoint(Reply(text="ok", delay_s=delay)) as endpoint:
        elapsed, latencies = asyncio.run(run(endpoint))
    overhead_p95 = statistics.quantiles([latency - delay for latency in latencies], n=20)[-1]
    print(f"{total} requests at concurrency {concurrency}: {elapsed:.3f} s, p95 overhead {overhead_p95 * 1000:.1f} ms")
    assert len(endpoint.requests) == total
    assert min(latencies) >= delay
    # Two waves take 1 s; serialised, 64 x 0.5 = 32 s. The slack absorbs a loaded machine.
    assert elapsed < 3.0, f"two waves of {delay} s took {elapsed:.3f} s: the server serialises requests"


def test_it_binds_only_the_loopback_address():
    with JudgeEndpoint() as endpoint:
        host, port = endpoint.url.removeprefix("http://").split(":")
        assert host == "127.0.0.1"
        with socket.create_connection(("127.0.0.1", int(port)), timeout=2):
            pass
        with pytest.raises(ConnectionRefusedError):  # another loopback address: not a wildcard bind
            socket.create_connection(("127.0.0.2", int(port)), timeout=2).close()


def test_replies_are_checked():
    with pytest.raises(ValueError, match="kind"):
        Reply(kind="json")
    with pytest.raises(ValueError, match="tool_input"):
        Reply(kind="tool")
    with pytest.raises(ValueError, match="error status"):
        Reply(kind="status")
    with pytest.raises(ValueError, match="at least one"):
        JudgeEndpoint([])
