"""The MCP server object: the SDK's low-level ``Server`` wired to Bastion's kernel.

Serving step ``transport -> server``: ``tools/list`` (the caller's catalog), ``tools/call``
(``CallHandler``), ``subscriptions/listen`` (2026-07-28 change events), the request-state
boundary (sealed approval state), a middleware binding the MCP request id into every log line,
and ``Notifier``, which tells clients of both eras that the tool list changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator
from typing import Any

import mcp_types as types
import structlog
from mcp.server.connection import Connection
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ToolsListChanged
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from bastion import __version__

from .approvals import request_state_boundary
from .auth import current_caller
from .calls import CallHandler
from .holder import KernelHolder


def tools_fanout(kernel: Any) -> Any:
    """A ``ToolsFanout`` when the kernel's state lives in a shared store, else None."""
    state = kernel.state
    if state.store is None:
        return None
    from bastion.state.fanout import ToolsFanout

    return ToolsFanout(state.section, state.node_id, state.environ)


__all__ = ["BastionServer", "Notifier", "tracing_installed"]

log = structlog.get_logger("bastion.serve")

INSTRUCTIONS = (
    "Tools are Bastion skills, each run in a WebAssembly sandbox under the operator's policy. "
    "A failed call's text starts with a stable error code (e.g. TIMEOUT:, INVALID_INPUT:)."
)


class Notifier:
    """Sends "the tool list changed" to every client: on the session (2025) era to each
    connection that listed tools, on the 2026-07-28 era through ``subscriptions/listen``."""

    def __init__(self) -> None:
        self.bus = InMemorySubscriptionBus()
        self._legacy: weakref.WeakSet[Connection] = weakref.WeakSet()

    def track(self, ctx: ServerRequestContext[Any, Any]) -> None:
        """Remember a session-era connection that can receive standalone notifications."""
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return
        # The SDK exposes the connection only through the session (no public accessor yet).
        conn = getattr(ctx.session, "_connection", None)
        if isinstance(conn, Connection) and conn.has_standalone_channel:
            self._legacy.add(conn)

    async def tools_changed(self) -> None:
        await self.bus.publish(ToolsListChanged())
        for conn in list(self._legacy):
            try:
                await conn.send_tool_list_changed()
            except Exception:  # a gone client must not stop the others' notifications
                self._legacy.discard(conn)


async def _bind_request_id(
    ctx: ServerRequestContext[Any, Any], call_next: CallNext
) -> HandlerResult:
    """Every log line written while a request is handled carries its MCP request id.

    Bound and reset by contextvar tokens: what ``bound_contextvars`` does, without its scan of
    every variable in the context (~5 us of each request's event-loop time)."""
    if ctx.request_id is None:
        return await call_next(ctx)
    tokens = structlog.contextvars.bind_contextvars(
        mcp_request_id=str(ctx.request_id), mcp_method=ctx.method
    )
    try:
        return await call_next(ctx)
    finally:
        structlog.contextvars.reset_contextvars(**tokens)


def tracing_installed(provider: object) -> bool:
    """Whether ``provider`` (OpenTelemetry's global tracer provider) records anything: not the
    API's placeholder (``ProxyTracerProvider``, which stays a no-op until a real provider is
    set) nor its ``NoOpTracerProvider``."""
    from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider

    return not isinstance(provider, (ProxyTracerProvider, NoOpTracerProvider))


def _drop_idle_tracing(server: Server[Any]) -> None:
    """Remove the SDK's ``OpenTelemetryMiddleware`` when no tracer provider is installed.

    The SDK puts it first on every server (its documented opt-out is dropping it from
    ``Server.middleware``); with no provider it builds an attribute dict, parses ``_meta`` for
    a trace context and enters a no-op span around every request for nothing (~0.05-0.1 ms
    of the event loop per call, bench/README.md). A provider installed before the server is
    built (an embedder's, or ``OTEL_PYTHON_TRACER_PROVIDER``) keeps it."""
    from mcp.server._otel import OpenTelemetryMiddleware
    from opentelemetry.trace import get_tracer_provider

    if not tracing_installed(get_tracer_provider()):
        server.middleware[:] = [
            m for m in server.middleware if not isinstance(m, OpenTelemetryMiddleware)
        ]


class BastionServer:
    """Builds the SDK ``Server`` for a ``KernelHolder`` and keeps what its handlers share."""

    def __init__(self, holder: KernelHolder) -> None:
        self.holder = holder
        self.notifier = Notifier()
        policy = holder.current.kernel.policy
        self.calls = CallHandler(holder)
        self.listen = ListenHandler(self.notifier.bus)
        self.server: Server[Any] = Server(
            "bastion",
            version=__version__,
            title="Bastion",
            instructions=INSTRUCTIONS,
            on_list_tools=self._list_tools,
            get_tool_input_schema=self._input_schema,
            on_call_tool=self.calls,
            on_subscriptions_listen=self.listen,
            lifespan=self._lifespan,
        )
        _drop_idle_tracing(self.server)
        self.server.middleware.append(_bind_request_id)
        self.server.middleware.append(request_state_boundary(policy))
        self.fanout = tools_fanout(holder.current.kernel)
        """Tool-list changes shared with the other replicas (a shared ``[state]`` store)."""

    lifespan_state: dict[str, Any] = {}
    """What the server's lifespan yielded (the SDK hands it to every request's context)."""

    @contextlib.asynccontextmanager
    async def _lifespan(self, _: Server[Any]) -> AsyncIterator[dict[str, Any]]:
        """The SDK's default lifespan (an empty state), kept for the HTTP fast path."""
        state: dict[str, Any] = {}
        self.lifespan_state = state
        yield state

    async def _list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        self.notifier.track(ctx)
        tools = self.holder.current.catalog.tools(current_caller())
        return types.ListToolsResult(tools=list(tools))

    def _input_schema(self, name: str) -> dict[str, Any] | None:
        """One tool's schema for the caller (what ``tools/list`` would give it), looked up
        instead of running the listing on every 2026-era ``tools/call``."""
        return self.holder.current.catalog.input_schema(name, current_caller())

    def initialization_options(self) -> InitializationOptions:
        return self.server.create_initialization_options(NotificationOptions(tools_changed=True))

    async def reload(self, *, publish: bool = True) -> bool:
        """Rebuild the kernel off the loop; tell clients when their tools may have changed."""
        changed = await asyncio.get_running_loop().run_in_executor(None, self.holder.reload)
        if changed:
            await self.notifier.tools_changed()
            if publish and self.fanout is not None:
                await self.fanout.publish()
        return changed

    async def remote_change(self, node: str) -> None:
        """Another replica's tools changed: re-read ours, and tell our clients to list again."""
        log.info("tools_changed_elsewhere", node=node)
        if not await self.reload(publish=False):
            await self.notifier.tools_changed()

    async def watch(self, interval_s: float = 1.0) -> None:
        """Poll the policy file and the packs; reload on a change (runs until cancelled)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval_s)
            try:
                moved = await loop.run_in_executor(None, self.holder.changed_on_disk)
                if moved:
                    await self.reload()
            except Exception:
                log.exception("watch_failed")
