"""Frame limits: every MCP message is size- and depth-checked before any JSON parser sees it.

The first step of serving (``transport -> frame limits -> auth -> MCP dispatch -> kernel``): an
HTTP body or a stdio line over ``MAX_FRAME_BYTES``, or nested deeper than ``MAX_FRAME_DEPTH``,
is refused by a linear scan, so a hostile client cannot make the host build a huge or deeply
recursive structure. The caps sit just above the kernel's own input caps plus the JSON-RPC
envelope, so nothing the kernel would accept is refused here.
"""

from __future__ import annotations

import json
import re
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.inputfile import MAX_INPUT_BYTES, MAX_INPUT_DEPTH

__all__ = ["MAX_FRAME_BYTES", "MAX_FRAME_DEPTH", "FrameLimitMiddleware", "frame_problem"]

MAX_FRAME_BYTES: Final[int] = MAX_INPUT_BYTES + 64 * 1024
"""The kernel's input cap plus room for the JSON-RPC envelope and ``_meta``."""
MAX_FRAME_DEPTH: Final[int] = MAX_INPUT_DEPTH + 8
"""The kernel's depth cap plus the envelope's levels (message, params, arguments, ...)."""

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")


def frame_problem(
    data: bytes, *, max_bytes: int = MAX_FRAME_BYTES, max_depth: int = MAX_FRAME_DEPTH
) -> str | None:
    """Why ``data`` is refused (too large, too deep), or None; linear time, no parsing."""
    if len(data) > max_bytes:
        return f"message of {len(data)} bytes is over the {max_bytes}-byte limit"
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return None  # cannot nest deeper than the brackets it has
    structure = _NOT_BRACKET.sub(b"", _STRING.sub(b"", data))
    depth = 0
    for c in structure:
        if c in (0x5B, 0x7B):
            depth += 1
            if depth > max_depth:
                return f"message nests deeper than {max_depth} levels"
        else:
            depth -= 1
    return None


def _jsonrpc_error(message: str) -> bytes:
    return json.dumps(
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}}
    ).encode()


class FrameLimitMiddleware:
    """ASGI middleware: reads a POST body up to the cap, refuses it (413 too large, 400 too
    deep) before the app parses it, and replays it to the app otherwise."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int = MAX_FRAME_BYTES, max_depth: int = MAX_FRAME_DEPTH
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def _refuse(self, send: Send, status: int, message: str) -> None:
        body = _jsonrpc_error(message)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._refuse(
                        send,
                        413,
                        f"body of {declared} bytes is over the {self.max_bytes}-byte limit",
                    )
                    return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)  # the client went away; let the app see it
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._refuse(send, 413, f"body is over the {self.max_bytes}-byte limit")
                return
            if not message.get("more_body", False):
                break
        problem = frame_problem(bytes(body), max_bytes=self.max_bytes, max_depth=self.max_depth)
        if problem is not None:
            await self._refuse(send, 400 if "deeper" in problem else 413, problem)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
