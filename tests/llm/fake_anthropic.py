"""A local HTTP server speaking the Anthropic Messages API (JSON and SSE), scripted per test.

It runs on 127.0.0.1 on a free port in a daemon thread. Each POST /v1/messages takes the next
scripted step: a ``Reply`` (served as JSON, or as the exact SSE event sequence when the request
says ``stream: true``), an ``ErrorReply`` (HTTP error with the Anthropic error JSON and
``retry-after-ms``), a ``StreamError`` (an SSE stream that breaks with ``event: error``), or a
callable computing one of those from the request body. Every request is recorded.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "ErrorReply",
    "FakeAnthropic",
    "Recorded",
    "Reply",
    "StreamError",
    "text",
    "tool_use",
]

_ids = itertools.count(1)


def text(s: str) -> dict[str, Any]:
    """A text content block."""
    return {"type": "text", "text": s}


def tool_use(name: str, args: dict[str, Any], id: str | None = None) -> dict[str, Any]:
    """A tool_use content block (a fresh id unless one is given)."""
    return {
        "type": "tool_use",
        "id": id or f"toolu_fake{next(_ids):04d}",
        "name": name,
        "input": args,
    }


@dataclass
class Reply:
    """A successful assistant message."""

    content: list[dict[str, Any]]
    stop_reason: str | None = None
    input_tokens: int = 10
    output_tokens: int = 5

    @property
    def stop(self) -> str:
        if self.stop_reason:
            return self.stop_reason
        return "tool_use" if any(b["type"] == "tool_use" for b in self.content) else "end_turn"


@dataclass
class ErrorReply:
    """An HTTP error response in the Anthropic error shape."""

    status: int
    type: str = "api_error"
    message: str = "scripted error"
    retry_after_ms: int | None = None


@dataclass
class StreamError:
    """An SSE stream that sends ``partial`` text, then ``event: error``."""

    partial: str = "Partial answer"
    type: str = "overloaded_error"
    message: str = "Overloaded"


Outcome = Reply | ErrorReply | StreamError
Step = Outcome | Callable[[dict[str, Any]], Outcome]


@dataclass
class Recorded:
    """One request the server received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class _State:
    script: list[Step] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _message(reply: Reply, model: str) -> dict[str, Any]:
    return {
        "id": f"msg_fake{next(_ids):04d}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": reply.content,
        "stop_reason": reply.stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": reply.input_tokens,
            "output_tokens": reply.output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def _chunks(s: str, n: int = 3) -> list[str]:
    if not s:
        return [""]
    size = max(1, -(-len(s) // n))
    return [s[i : i + size] for i in range(0, len(s), size)]


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _stream_events(reply: Reply, model: str) -> Iterator[bytes]:
    start = _message(reply, model)
    start["content"] = []
    start["stop_reason"] = None
    start["usage"] = {
        "input_tokens": reply.input_tokens,
        "output_tokens": 1,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    yield _sse("message_start", {"type": "message_start", "message": start})
    yield _sse("ping", {"type": "ping"})
    for i, block in enumerate(reply.content):
        if block["type"] == "text":
            yield _sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": i,
                    "content_block": {"type": "text", "text": ""},
                },
            )
            for piece in _chunks(block["text"]):
                yield _sse(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": i,
                        "delta": {"type": "text_delta", "text": piece},
                    },
                )
        elif block["type"] == "tool_use":
            yield _sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": i,
                    "content_block": {
                        "type": "tool_use",
                        "id": block["id"],
                        "name": block["name"],
                        "input": {},
                    },
                },
            )
            for piece in _chunks(json.dumps(block["input"])):
                yield _sse(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": i,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    },
                )
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": i})
    yield _sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": reply.stop, "stop_sequence": None},
            "usage": {"output_tokens": reply.output_tokens},
        },
    )
    yield _sse("message_stop", {"type": "message_stop"})


def _error_body(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send_json(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", f"req_fake{next(_ids):04d}")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _start_sse(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._send_json(400, _error_body("invalid_request_error", "body is not JSON"))
            return
        state = self.server.state
        with state.lock:
            state.requests.append(
                Recorded(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
            step = state.script.pop(0) if state.script else None
        if self.path.split("?")[0] != "/v1/messages":
            self._send_json(404, _error_body("not_found_error", f"no route {self.path}"))
            return
        if step is None:
            self._send_json(
                400, _error_body("invalid_request_error", "fake server: no scripted response left")
            )
            return
        if callable(step):
            step = step(body)
        model = str(body.get("model", "claude-fake"))
        if isinstance(step, ErrorReply):
            headers = {"x-should-retry": "true"} if step.status in (429, 529) else {}
            if step.retry_after_ms is not None:
                headers["retry-after-ms"] = str(step.retry_after_ms)
            self._send_json(step.status, _error_body(step.type, step.message), headers)
        elif isinstance(step, StreamError):
            self._start_sse()
            partial = Reply([text(step.partial)])
            events = list(_stream_events(partial, model))
            for ev in events[:4]:  # message_start, ping, content_block_start, first delta
                self.wfile.write(ev)
            self.wfile.write(_sse("error", _error_body(step.type, step.message)))
            self.wfile.flush()
        elif body.get("stream"):
            self._start_sse()
            for ev in _stream_events(step, model):
                self.wfile.write(ev)
                self.wfile.flush()
        else:
            self._send_json(200, _message(step, model))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: _State

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hang up (retries, aborted streams); that is not a server error here."""


class FakeAnthropic:
    """The server; use as a context manager. ``base_url`` for the SDK, ``requests`` recorded."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = _State()
        self._thread = threading.Thread(
            target=self._server.serve_forever, daemon=True, kwargs={"poll_interval": 0.05}
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def requests(self) -> list[Recorded]:
        with self._server.state.lock:
            return list(self._server.state.requests)

    @property
    def pending(self) -> int:
        """Scripted steps not yet served."""
        with self._server.state.lock:
            return len(self._server.state.script)

    def script(self, *steps: Step) -> FakeAnthropic:
        """Append steps, served one per request in order."""
        with self._server.state.lock:
            self._server.state.script.extend(steps)
        return self

    def start(self) -> FakeAnthropic:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
