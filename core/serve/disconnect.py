"""Cancel a 2025-era HTTP call when its client disconnects.

Serving step ``transport (HTTP) -> disconnect watch -> SDK``. On the 2026-07-28 era a call is
bound to its POST and the SDK cancels it when the connection drops; on the 2025 era the call
belongs to the session, which outlives a vanished client, so the call would run on to its
deadline. This middleware sees the POST's ``http.disconnect`` and tells the call handler which
``tools/call`` (session id, request id) lost its client; a call that already finished is not
affected.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DisconnectWatchMiddleware"]

_SESSION_HEADER = b"mcp-session-id"


class DisconnectWatchMiddleware:
    """ASGI middleware: ``on_gone(session_id, request_id)`` when a session's ``tools/call``
    POST loses its client before the call ended."""

    def __init__(self, app: ASGIApp, on_gone: Callable[[str, str], None]) -> None:
        self.app = app
        self.on_gone = on_gone

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session = None
        if scope["type"] == "http" and scope.get("method") == "POST":
            for key, value in scope.get("headers", []):
                if key == _SESSION_HEADER:
                    session = value.decode("latin-1")
        if session is None:
            await self.app(scope, receive, send)
            return
        ids: list[str] = []
        sid: str = session

        async def watched() -> Message:
            message = await receive()
            if message["type"] == "http.request" and b'"tools/call"' in message.get("body", b""):
                # The body was size- and depth-checked already (FrameLimitMiddleware).
                try:
                    obj = json.loads(message["body"])
                except ValueError:
                    obj = None
                if isinstance(obj, dict) and isinstance(obj.get("id"), (str, int)):
                    ids.append(str(obj["id"]))
            elif message["type"] == "http.disconnect":
                for request_id in ids:
                    self.on_gone(sid, request_id)
            return message

        await self.app(scope, watched, send)
