"""A direct HTTP path for 2026-07-28 ``tools/call``: the SDK's checks and dispatch, without its
per-request stream machinery.

Serving step ``transport (HTTP) -> frame limits -> fast path -> SDK``. For a 2026-07-28 POST
the SDK (``handle_modern_request``) checks Host/Origin and Content-Type, the Accept header, the
JSON-RPC envelope, duplicated routing headers, the version ladder (``classify_inbound_request``)
and the ``Mcp-Param-*`` headers, then runs the request through ``serve_one`` inside an anyio
task group with a zero-buffer memory stream, a disconnect watcher and a deferral timer, so that
a handler emitting notifications can switch the answer to an event stream. That machinery costs
more event-loop time than the rest of a call's MCP handling (bench/README.md).

``ModernCallFastPath`` runs the same checks, with the SDK's own functions, on a ``tools/call``
request without a progress token; any request that fails one (or is anything else: another
method, a notification, a malformed body, a session-era request) goes to the SDK untouched,
before anything was done, so it is refused or answered exactly as before. A request that
passes is dispatched through the SDK's own ``serve_one`` (parameter validation, the server's
middleware: request-id log binding, the sealed request-state boundary; Bastion's handler; the
result's wire shape), so the answer is the SDK path's answer. What differs is only how the
exchange is carried: one watcher task cancels the call when the client disconnects (the call
handler then stops the guest), and the answer is the same JSON the SDK writes; should the
handler emit a notification, or run past the SDK's deferral window, the answer becomes an
event stream with the SDK's framing and keep-alive pings, as there. The call's result reaches
the loop once its audit record is written (``records_deferred``), the answer's bytes are built
while the record is fsynced, and they are sent only once it is on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
from mcp.server.connection import Connection
from mcp.server.lowlevel import Server
from mcp.server.runner import modern_error_data, serve_one
from mcp.server.streamable_http import check_accept_headers
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.dispatcher import CallOptions
from mcp.shared.exceptions import NoBackChannelError
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    MCP_PARAM_HEADER_PREFIX,
    MCP_PROTOCOL_VERSION_HEADER,
    InboundModernRoute,
    classify_inbound_request,
    find_duplicated_routing_header,
    validate_mcp_param_headers,
)
from mcp.shared.jsonrpc_dispatcher import progress_token_from_params
from mcp.shared.message import MessageMetadata, ServerMessageMetadata
from mcp.shared.transport_context import TransportContext
from mcp_types import JSONRPCError, JSONRPCNotification, JSONRPCResponse, RequestId
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .calls import records_deferred

__all__ = ["SSE_PING_INTERVAL_S", "ModernCallFastPath"]

SSE_PING_INTERVAL_S: Final[float] = 15.0
"""The SDK's deferral window and keep-alive period (``_streamable_http_modern``): a call still
running this long after it started answers as an event stream with a ping every period."""

_VERSION_HEADER: Final[bytes] = MCP_PROTOCOL_VERSION_HEADER.lower().encode("ascii")
_PARAM_PREFIX: Final[str] = MCP_PARAM_HEADER_PREFIX.lower()
_SSE_HEADERS: Final[list[tuple[bytes, bytes]]] = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"connection", b"keep-alive"),
    (b"x-accel-buffering", b"no"),
]
_PING: Final[bytes] = b": ping\r\n\r\n"
_JSON_TYPE: Final[tuple[bytes, bytes]] = (b"content-type", b"application/json")


def _wire(msg: JSONRPCResponse | JSONRPCError | JSONRPCNotification) -> str:
    return json.dumps(
        msg.model_dump(mode="json", by_alias=True, exclude_none=True), separators=(",", ":")
    )


def _sse_event(msg: JSONRPCResponse | JSONRPCError | JSONRPCNotification) -> bytes:
    return f"event: message\r\ndata: {_wire(msg)}\r\n\r\n".encode()


def _answer_bytes(request_id: RequestId, result: dict[str, Any]) -> bytes:
    """The wire form of a success answer: the bytes ``_wire(JSONRPCResponse(...))`` gives,
    built without the model (whose dump of the already JSON-mode ``result`` dict is a copy).
    ``exclude_none`` does not reach into a ``dict[str, Any]`` field and the id is never None,
    so the two agree; a value ``json.dumps`` would not write as pydantic does (NaN, infinity)
    takes the model's way."""
    try:
        return json.dumps(
            {"jsonrpc": "2.0", "id": request_id, "result": result},
            separators=(",", ":"),
            allow_nan=False,
        ).encode()
    except (TypeError, ValueError):
        msg = JSONRPCResponse(jsonrpc="2.0", id=request_id, result=result)
        return _wire(msg).encode()


def _header_dict(headers: Headers) -> dict[str, str]:
    """``dict(headers)`` (each name once, its first value) in one pass: the Mapping protocol
    looks every name up again by a scan of all the headers."""
    out: dict[str, str] = {}
    for key, value in headers.raw:
        out.setdefault(key.decode("latin-1"), value.decode("latin-1"))
    return out


def _envelope(decoded: dict[str, Any]) -> tuple[RequestId, dict[str, Any] | None] | None:
    """The id and params of a JSON-RPC ``tools/call`` request, checked as ``JSONRPCRequest``
    checks them (``jsonrpc`` exactly "2.0", a strict int or a str id, a str method, params an
    object or absent; other keys ignored) without building the model; None for anything the
    model would refuse (the SDK then answers it). Narrower than the model never, wider never:
    ``test_fastpath`` checks both agree."""
    if decoded.get("jsonrpc") != "2.0":
        return None
    rid = decoded.get("id")
    if type(rid) is not int and not isinstance(rid, str):
        return None
    if not isinstance(decoded.get("method"), str):
        return None
    params = decoded.get("params")
    if params is not None and not isinstance(params, dict):
        return None
    return rid, params


@dataclass(frozen=True, slots=True)
class _Answer:
    streaming: bool
    """The event stream had started: ``body`` is its last event."""
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


def _final_answer(
    request_id: RequestId,
    result: dict[str, Any] | None,
    error: JSONRPCError | None,
    streaming: bool,
) -> _Answer:
    """The last bytes of the exchange: the answer's event on a started event stream, else the
    JSON body with what starlette's ``Response(body, status, media_type="application/json")``
    sends (an error's status from the SDK's table)."""
    if streaming:
        msg = error or JSONRPCResponse(jsonrpc="2.0", id=request_id, result=result or {})
        return _Answer(True, 200, [], _sse_event(msg))
    if error is not None:
        status = ERROR_CODE_HTTP_STATUS.get(error.error.code, 200)
        body = _wire(error).encode()
    else:
        assert result is not None
        status, body = 200, _answer_bytes(request_id, result)
    return _Answer(False, status, [(b"content-length", str(len(body)).encode()), _JSON_TYPE], body)


@dataclass(frozen=True, slots=True)
class _Plan:
    request_id: RequestId
    params: dict[str, Any] | None
    verdict: InboundModernRoute


@dataclass
class _Exchange:
    """The ``DispatchContext`` of one fast-path request: no back channel (a 2026-07-28 server
    sends no requests), notifications switch the answer to an event stream."""

    send: Send
    transport: TransportContext
    request_id: RequestId
    message_metadata: MessageMetadata
    cancel_requested: anyio.Event = field(default_factory=anyio.Event)
    can_send_request: bool = field(default=False, init=False)
    gone: bool = False
    """The client disconnected (the watcher cancelled the call)."""
    streaming: bool = False
    """The event-stream answer has started (headers sent)."""
    pinger: asyncio.Task[None] | None = None

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> dict[str, Any]:
        raise NoBackChannelError(method)

    async def notify(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> None:
        body = dict(params) if params is not None else None
        await self.stream(
            _sse_event(JSONRPCNotification(jsonrpc="2.0", method=method, params=body))
        )

    async def progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None:
        """No progress token (requests that carry one take the SDK's path): nothing to send."""

    async def stream(self, event: bytes) -> None:
        """Send one event, starting the event stream first if needed."""
        if not self.streaming:
            self.streaming = True
            await self.send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        await self.send({"type": "http.response.body", "body": event, "more_body": True})

    def start_pinging(self) -> None:
        """The call ran past the deferral window: stream from now on, a ping every period."""
        self.pinger = asyncio.ensure_future(self._ping())

    async def _ping(self) -> None:
        while True:
            await self.stream(_PING)
            await asyncio.sleep(SSE_PING_INTERVAL_S)

    async def stop_pinging(self) -> None:
        if self.pinger is not None:
            self.pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.pinger


async def _watch_disconnect(receive: Receive, task: asyncio.Task[Any], ex: _Exchange) -> None:
    """Cancel the call's task when the client goes away (the SDK's disconnect watcher)."""
    while (await receive()).get("type") != "http.disconnect":
        pass
    ex.gone = True
    task.cancel()


class ModernCallFastPath:
    """ASGI layer in front of the SDK's session manager (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        server: Server[Any],
        security: TransportSecuritySettings | None,
        lifespan_state: Callable[[], Any],
    ) -> None:
        self.app = app
        self.server = server
        self.security = TransportSecurityMiddleware(security)
        self.lifespan_state = lifespan_state
        self.taken = 0
        """Requests answered by this path (the others went to the SDK)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        version = next((v for k, v in scope.get("headers", []) if k == _VERSION_HEADER), None)
        if version is None or version.decode("latin-1") in HANDSHAKE_PROTOCOL_VERSIONS:
            await self.app(scope, receive, send)  # the session era: the SDK's transport
            return
        first = await receive()
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return first
            return await receive()

        if first.get("type") != "http.request" or first.get("more_body", False):
            await self.app(scope, replay, send)
            return
        request = Request(scope, replay)
        plan = await self._plan(request, first.get("body", b""))
        if plan is None:
            await self.app(scope, replay, send)
            return
        self.taken += 1
        await self._serve(plan, request, scope, receive, send)

    async def _plan(self, request: Request, body: bytes) -> _Plan | None:
        """The request, if every check of the SDK's path passes and it is a plain
        ``tools/call``; None sends it to the SDK (which answers or refuses it)."""
        if b'"tools/call"' not in body:
            return None
        if await self.security.validate_request(request, is_post=True) is not None:
            return None
        has_json, has_sse = check_accept_headers(request)
        if not (has_json and has_sse):
            return None
        try:
            decoded = json.loads(body)
        except (ValueError, RecursionError):
            return None
        if not isinstance(decoded, dict) or "id" not in decoded:
            return None
        if decoded.get("method") != "tools/call":
            return None
        envelope = _envelope(decoded)
        if envelope is None:
            return None
        headers = request.headers
        if find_duplicated_routing_header(headers.items()) is not None:
            return None
        verdict = classify_inbound_request(decoded, headers=_header_dict(headers))
        if not isinstance(verdict, InboundModernRoute):
            return None
        request_id, params = envelope
        if progress_token_from_params(params) is not None:
            return None  # progress notifications: the SDK's event stream
        if self._param_headers_refused(headers, params or {}):
            return None
        return _Plan(request_id, params, verdict)

    def _param_headers_refused(self, headers: Headers, params: dict[str, Any]) -> bool:
        """Whether the SDK would refuse the call's ``Mcp-Param-*`` headers (or would check
        them some other way): both go to the SDK."""
        name = params.get("name")
        raw = params.get("arguments")
        if not isinstance(name, str) or (raw is not None and not isinstance(raw, Mapping)):
            return False
        arguments: Mapping[str, Any] = raw or {}
        if not arguments and not any(h.startswith(_PARAM_PREFIX) for h in headers):
            return False
        lookup = self.server.get_tool_input_schema
        if lookup is None:
            return True
        try:
            schema = lookup(name)
        except Exception:
            return True
        if schema is None:
            return False
        return validate_mcp_param_headers(schema, arguments, headers) is not None

    async def _serve(
        self, plan: _Plan, request: Request, scope: Scope, receive: Receive, send: Send
    ) -> None:
        verdict, request_id = plan.verdict, plan.request_id
        connection = Connection.from_envelope(
            verdict.protocol_version, verdict.client_info, verdict.client_capabilities
        )
        ex = _Exchange(
            send,
            TransportContext(
                kind="streamable-http", can_send_request=False, headers=request.headers
            ),
            request_id,
            ServerMessageMetadata(request_context=request),
        )
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.ensure_future(_watch_disconnect(receive, task, ex))
        timer = asyncio.get_running_loop().call_later(SSE_PING_INTERVAL_S, ex.start_pinging)
        result: dict[str, Any] | None = None
        error: JSONRPCError | None = None
        try:
            with records_deferred() as records:
                try:
                    result = await serve_one(
                        self.server,
                        ex,
                        "tools/call",
                        plan.params,
                        connection=connection,
                        lifespan_state=self.lifespan_state(),
                    )
                except Exception as exc:
                    error = JSONRPCError(jsonrpc="2.0", id=request_id, error=modern_error_data(exc))
                timer.cancel()  # no switch to an event stream after this point
                final = _final_answer(request_id, result, error, ex.streaming)
                for recorded in records:  # the answer only once the call's record is on disk
                    await recorded
        except asyncio.CancelledError:
            if ex.gone:  # the client left; the call has stopped; nobody reads an answer
                task.uncancel()
                return
            raise
        finally:
            timer.cancel()
            watcher.cancel()
            await ex.stop_pinging()
        if final.streaming:
            await send({"type": "http.response.body", "body": final.body, "more_body": False})
            return
        await send(
            {"type": "http.response.start", "status": final.status, "headers": final.headers}
        )
        await send({"type": "http.response.body", "body": final.body})
