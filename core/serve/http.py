"""``bastion serve``: Streamable HTTP at ``/mcp`` plus ``/healthz``, ``/readyz``, ``/metrics``.

Serving step ``transport (HTTP)``: ``/mcp`` is ``front (POST: front.py) -> auth audit -> bearer
auth -> frame limits -> fast path (2026-07-28 tools/call, fastpath.py) -> disconnect watch ->
the SDK's session manager`` (both protocol eras; Host/Origin checked against DNS rebinding).
Binding anything but loopback without a token configured is refused. ``SIGHUP`` reloads the
policy and packs; they are also polled for changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

import structlog
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import BearerAuthBackend, RequireAuthMiddleware
from mcp.server.auth.provider import TokenVerifier
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import AnyHttpUrl
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bastion.errors import ConfigError

from .auth import AuthAuditMiddleware
from .coalesce import CoalescingHttpToolsProtocol
from .disconnect import DisconnectWatchMiddleware
from .fastpath import ModernCallFastPath
from .front import FrontedStarlette
from .limits import MAX_FRAME_BYTES, FrameLimitMiddleware
from .readiness import Readiness
from .server import BastionServer

__all__ = ["build_app", "is_loopback", "serve_http", "transport_security"]

log = structlog.get_logger("bastion.serve")


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def transport_security(
    host: str, port: int, extra_hosts: Sequence[str] = ()
) -> TransportSecuritySettings:
    """Host/Origin allow-lists: this address and port (and loopback names when bound to
    loopback); anything else is refused (421/403) before the request is read."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    hosts = [f"{shown}:{port}", *extra_hosts]
    if is_loopback(host):
        hosts += [f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts,
        allowed_origins=[f"http://{h}" for h in hosts] + [f"https://{h}" for h in hosts],
    )


def build_app(
    bs: BastionServer,
    readiness: Readiness,
    *,
    host: str,
    port: int,
    token_verifier: TokenVerifier | None,
    resource_url: str | None = None,
    watch_interval_s: float = 1.0,
) -> Starlette:
    """The ASGI app of ``bastion serve`` (also usable under any ASGI server)."""
    manager = StreamableHTTPSessionManager(
        app=bs.server,
        security_settings=transport_security(
            host, port, bs.holder.current.kernel.policy.doc.serve.allowed_hosts
        ),
        max_request_body_size=MAX_FRAME_BYTES,
    )
    sdk = DisconnectWatchMiddleware(StreamableHTTPASGIApp(manager), bs.calls.client_gone)
    fast = ModernCallFastPath(sdk, bs.server, manager.security_settings, lambda: bs.lifespan_state)
    endpoint: Any = FrameLimitMiddleware(fast)
    middleware: list[Middleware] = []
    if token_verifier is not None:
        endpoint = RequireAuthMiddleware(endpoint, [], None)
        backend = BearerAuthBackend(
            token_verifier,
            resource_server_url=AnyHttpUrl(resource_url) if resource_url else None,
        )
        middleware = [
            Middleware(AuthenticationMiddleware, backend=backend),
            Middleware(AuthContextMiddleware),
        ]

    def record(fields: dict[str, Any]) -> None:
        bs.holder.current.kernel.audit.write("decision", **fields)

    endpoint = AuthAuditMiddleware(endpoint, record)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"ok": True})

    async def readyz(_: Request) -> Response:
        ready, details = await asyncio.get_running_loop().run_in_executor(None, readiness.report)
        return JSONResponse(details, status_code=200 if ready else 503)

    async def metrics(_: Request) -> Response:
        try:
            text = bs.holder.current.kernel.metrics_text()
        except ConfigError as exc:
            return PlainTextResponse(str(exc) + "\n", status_code=501)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        readiness.start()
        async with manager.run():
            watcher = asyncio.ensure_future(bs.watch(watch_interval_s))
            fanout = bs.fanout and asyncio.ensure_future(bs.fanout.run(bs.remote_change))
            loop = asyncio.get_running_loop()
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(bs.reload()))
            try:
                yield
            finally:
                watcher.cancel()
                if fanout:
                    fanout.cancel()
                bs.listen.close()
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(signal.SIGHUP)

    mcp: Any = endpoint
    for m in reversed(middleware):  # the app's middleware list, for POST /mcp (front.py)
        mcp = m.cls(mcp, *m.args, **m.kwargs)
    app = FrontedStarlette(
        mcp,
        routes=[
            Route("/mcp", endpoint=endpoint),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ],
        middleware=middleware,
        lifespan=lifespan,
    )
    app.state.fast_path = fast  # how many calls it answered (tests, bench)
    return app


async def serve_http(app: Starlette, sock: socket.socket, *, log_level: str = "warning") -> None:
    """Run ``app`` with uvicorn on an already bound socket (so port 0 works)."""
    import uvicorn

    config = uvicorn.Config(
        app,
        # httptools (a dependency: C parsing, ~0.3 ms less per call than h11), writing each
        # answer in one segment (coalesce.py)
        http=CoalescingHttpToolsProtocol,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
        limit_concurrency=4096,
    )
    server = uvicorn.Server(config)
    host, port = sock.getsockname()[:2]
    sys.stderr.write(f"bastion serve: listening on http://{host}:{port}/mcp\n")
    sys.stderr.flush()
    await server.serve(sockets=[sock])
