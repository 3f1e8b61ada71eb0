"""A local stand-in LLM judge endpoint for tests and benchmarks: fault injection behind the real SDK clients.

`JudgeEndpoint` serves the OpenAI Chat Completions API (`POST /v1/chat/completions`) and Anthropic's Messages
API (`POST /v1/messages`) on 127.0.0.1, well enough that the real `openai` and `anthropic` clients parse its
replies (`base_url=f"{endpoint.url}/v1"` for openai, `base_url=endpoint.url` for anthropic). Each request gets
a scripted `Reply`: a text or tool-call answer after a delay, an HTTP error status (with `retry-after`), a garbage
or truncated JSON body, or a hang that ends by closing the connection. Every request is recorded.

It is not a judge: it never reads the prompt to decide anything (only a callable script may), and it implements
no more of either API than the clients need to parse a non-streaming reply. Standard library only.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

KINDS = ("text", "tool", "status", "garbage", "truncated", "hang")
PROTOCOLS = {"/v1/chat/completions": "openai", "/v1/messages": "anthropic"}
TOOL_NAME = "verdict"

# Error `type` strings each API uses for a status (OpenAI puts its code in `code`); others fall back to the last.
OPENAI_ERRORS = {400: "invalid_request_error", 401: "invalid_api_key", 403: "permission_denied", 404: "not_found",
                 429: "rate_limit_exceeded", 500: "server_error"}
ANTHROPIC_ERRORS = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
                    529: "overloaded_error"}


@dataclass(frozen=True)
class Reply:
    """What the endpoint answers to one request.

    kind: "text" (an assistant message), "tool" (one `verdict` tool call with `tool_input`, after a text block
    when `text` is set), "status" (HTTP `status` with the protocol's JSON error body, and a `retry-after` header
    when `retry_after` is set), "garbage" (200 with a body that is not JSON), "truncated" (200 with a JSON body
    cut in the middle), "hang" (wait `delay_s`, then close the connection without any response).
    `delay_s` delays every kind; `input_tokens`/`output_tokens` are the usage reported.
    Both garbage bodies are declared `application/json`, so the SDKs try to parse them.
    """

    kind: str = "text"
    text: str = ""
    tool_input: dict | None = None
    status: int = 200
    retry_after: float | None = None
    delay_s: float = 0.0
    input_tokens: int = 100
    output_tokens: int = 20

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Reply.kind must be one of {KINDS}, not {self.kind!r}")
        if self.kind == "tool" and self.tool_input is None:
            raise ValueError("a 'tool' reply needs tool_input")
        if self.kind == "status" and not 400 <= self.status <= 599:
            raise ValueError(f"a 'status' reply needs an error status (400-599), not {self.status}")


Script = Callable[[dict], Reply] | Sequence[Reply] | Reply


def _openai_body(reply: Reply, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text}
    if reply.kind == "tool":
        message["content"] = reply.text or None
        message["tool_calls"] = [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                                  "function": {"name": TOOL_NAME, "arguments": json.dumps(reply.tool_input)}}]
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": "tool_calls" if reply.kind == "tool" else "stop"}],
        "usage": {"prompt_tokens": reply.input_tokens, "completion_tokens": reply.output_tokens,
                  "total_tokens": reply.input_tokens + reply.output_tokens},
    }


def _anthropic_body(reply: Reply, model: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": reply.text}] if reply.text or reply.kind == "text" else []
    if reply.kind == "tool":
        content.append({"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}", "name": TOOL_NAME,
                        "input": reply.tool_input})
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": "tool_use" if reply.kind == "tool" else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens},
    }


def _error_body(protocol: str, status: int, message: str) -> dict[str, Any]:
    if protocol == "openai":
        code = OPENAI_ERRORS.get(status, "server_error")
        kind = "requests" if status == 429 else "invalid_request_error" if status < 500 else "server_error"
        return {"error": {"message": message, "type": kind, "code": code}}
    return {"type": "error", "error": {"type": ANTHROPIC_ERRORS.get(status, "api_error"), "message": message}}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False
    request_queue_size = 256  # the default backlog of 5 drops SYNs when dozens of clients connect at once

    def __init__(self, endpoint: JudgeEndpoint, address: tuple[str, int]) -> None:
        self.endpoint = endpoint
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (timed out, closed) is normal here; anything else is reported on stderr."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.endpoint._track(self.connection, open_=True)

    def finish(self) -> None:
        self.server.endpoint._track(self.connection, open_=False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: request lines (and bodies) are never printed."""

    def do_GET(self) -> None:
        self._send_json(404, {"error": {"message": f"no route for GET {self.path}", "type": "not_found"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        protocol = PROTOCOLS.get(urlsplit(self.path).path)
        if protocol is None:
            self._send_json(404, {"error": {"message": f"no route for POST {self.path}", "type": "not_found"}})
            return
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        record = {"protocol": protocol, "path": self.path, "body": body, "time": time.monotonic(),
                  "headers": {name.lower(): value for name, value in self.headers.items()}}
        endpoint = self.server.endpoint
        reply = endpoint._admit(record)
        if reply is None:
            self._send_json(400, _error_body(protocol, 400, "the request body is not a JSON object"))
            return
        if reply.delay_s > 0 and endpoint._stopping.wait(reply.delay_s):
            self.close_connection = True  # stopped while waiting: drop the request
            return
        if reply.kind == "hang":
            self.close_connection = True
            return
        model = str(record["body"].get("model", ""))
        if reply.kind == "status":
            headers = {} if reply.retry_after is None else {"retry-after": f"{reply.retry_after:g}"}
            self._send_json(reply.status, _error_body(protocol, reply.status, f"scripted status {reply.status}"),
                            headers)
            return
        if reply.kind == "garbage":
            self._send(200, b"<html><body>502 Bad Gateway</body></html>")
            return
        data = json.dumps((_openai_body if protocol == "openai" else _anthropic_body)(reply, model)).encode()
        self._send(200, data[: len(data) // 2] if reply.kind == "truncated" else data)

    def _send_json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers)

    def _send(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class JudgeEndpoint:
    """A scripted OpenAI + Anthropic endpoint on 127.0.0.1 (see the module docstring).

    script: a callable given each request record and returning a Reply; or a sequence of Replies consumed one
    per request in arrival order, the last repeating; or one Reply for every request.
    `requests` holds one record per request to either API route, in arrival order:
    {"protocol": "openai" | "anthropic", "path", "headers": {lower-cased name: value}, "body": parsed JSON
    (None when it is not JSON), "time": time.monotonic() at arrival}. Other paths get 404 and no record.
    """

    def __init__(self, script: Script = Reply(text='{"score": 1, "reason": "ok"}'),
                 host: str = "127.0.0.1", port: int = 0) -> None:
        if not callable(script) and not isinstance(script, Reply):
            script = tuple(script)
            if not script:
                raise ValueError("a sequence script needs at least one Reply")
        self._script = script
        self.host, self.port = host, port
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._position = itertools.count()
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the endpoint is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> JudgeEndpoint:
        if self._server is not None:
            raise RuntimeError("the endpoint is already started")
        self._stopping = threading.Event()
        self._server = _Server(self, (self.host, self.port))
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="judge-endpoint", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops accepting, wakes delayed and hanging requests (they close without a reply), closes connections."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        thread.join()
        self._server = self._thread = None

    def reset(self) -> None:
        """Clears the recorded requests and restarts a sequence script from its first Reply."""
        with self._lock:
            self.requests.clear()
            self._position = itertools.count()

    def __enter__(self) -> JudgeEndpoint:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _admit(self, record: dict) -> Reply | None:
        """Records a request and picks its Reply; None when the body is not a JSON object (the script is skipped)."""
        with self._lock:
            self.requests.append(record)
            if not isinstance(record["body"], dict):
                return None
            position = next(self._position)
        if isinstance(self._script, Reply):
            return self._script
        if callable(self._script):
            return self._script(record)
        return self._script[min(position, len(self._script) - 1)]

    def _track(self, connection: socket.socket, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)
