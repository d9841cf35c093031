"""The ``bastion serve`` app: Starlette, with ``POST /mcp`` handed straight to its own chain.

Serving step ``transport (HTTP) -> front -> auth audit -> bearer auth -> frame limits -> fast
path``. Starlette runs every request through its app-wide layers (error and exception
middleware, each wrapping ``send``), the app's middleware list and its router before the
``/mcp`` endpoint sees it: a few tens of microseconds of event-loop time per MCP call for
layers that route and catch nothing an MCP POST needs. ``FrontedStarlette`` sends a
``POST /mcp`` (no ``root_path``: not mounted under a prefix) directly to ``mcp``, which is the
same endpoint wrapped in the same authentication layers as the app's middleware list
(``AuthenticationMiddleware`` with the bearer backend, ``AuthContextMiddleware``): the same
token checks, the same 401 with its audit record, the same Host/Origin, size and depth limits
inside. Everything else (other paths and methods, lifespan) is Starlette's as before. An
exception escaping the chain is uvicorn's 500 instead of Starlette's (both "Internal Server
Error", and logged).
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["FrontedStarlette"]


class FrontedStarlette(Starlette):
    """Starlette whose ``POST /mcp`` goes to ``mcp`` without the app-wide layers."""

    def __init__(self, mcp: ASGIApp, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mcp = mcp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope.get("method") == "POST"
            and scope.get("path") == "/mcp"
            and not scope.get("root_path")
        ):
            scope["app"] = self
            await self.mcp(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
