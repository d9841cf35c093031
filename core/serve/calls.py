"""``tools/call``: one MCP call through ``kernel.ainvoke``, its result as an MCP tool result.

Serving step ``MCP dispatch -> calls -> kernel``. The caller (from the bearer token, or the
local user on stdio) becomes the ``InvocationContext``, so guardrails, tenant and role rules,
rate limits, quotas, breakers, the result cache, sanitizing and the audit log apply as for any
call. A skill-side failure is ``isError: true`` with text starting with the stable code
(``TIMEOUT: ...``); a name the caller may not use answers exactly like an unknown one. Calls
beyond the kernel's pool plus ``[serve] max_queue`` are refused at once (``RATE_LIMITED``), so
a flood never queues without bound. A cancelled request (cancel notification, disconnect)
cancels the call itself and waits until the guest has stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterator
from contextvars import ContextVar
from typing import Any, Final

import anyio
import mcp_types as types
import structlog
from mcp.server.context import ServerRequestContext
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from bastion.errors import ErrorCode
from bastion.result import InvocationContext, ToolResult

from .approvals import (
    APPROVAL_KEY,
    APPROVAL_SCHEMA,
    McpApproval,
    approval_message,
    approved_by,
    read_state,
    state_for,
)
from .auth import Caller, current_caller
from .content import mcp_content
from .holder import Generation, KernelHolder

__all__ = ["CallHandler", "error_result", "records_deferred", "tool_result"]

log = structlog.get_logger("bastion.serve")

_PROGRESS_TOTAL: Final[float] = 3.0


def error_result(code: str, message: str) -> types.CallToolResult:
    """An ``isError`` tool result whose text starts with the stable code."""
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=f"{code}: {message}")], is_error=True
    )


def tool_result(result: ToolResult, structured: bool) -> types.CallToolResult:
    """The MCP form of a kernel result: JSON text always, then each checked image or file as
    ``ImageContent`` / ``EmbeddedResource``; structured content when declared."""
    if not result.ok or result.error is not None:
        err = result.error
        assert err is not None
        text = err.message
        if err.retry_after_s is not None:
            text += f" (retry after {err.retry_after_s} s)"
        return error_result(err.code, text)
    return types.CallToolResult(
        content=mcp_content(result.output, result.invocation_id),
        structured_content=result.output
        if structured and isinstance(result.output, dict)
        else None,
    )


def _session_key(ctx: ServerRequestContext[Any, Any]) -> tuple[str, str] | None:
    """(session id, request id) of a 2025-era HTTP call, else None (stdio, 2026 era)."""
    headers = getattr(ctx.request, "headers", None)
    session = headers.get("mcp-session-id") if headers is not None else None
    if not session or ctx.request_id is None:
        return None
    return str(session), str(ctx.request_id)


def _can_elicit(ctx: ServerRequestContext[Any, Any]) -> bool:
    caps = ctx.session.client_capabilities
    el = caps.elicitation if caps is not None else None
    return el is not None and (el.form is not None or el.url is None)


_DEFERRED: ContextVar[list[Awaitable[None]] | None] = ContextVar(
    "bastion_deferred_records", default=None
)


@contextlib.contextmanager
def records_deferred() -> Iterator[list[Awaitable[None]]]:
    """Within it, a call returns its result before its audit record is on disk and leaves
    the wait in the yielded list: the transport builds the answer while the record is
    fsynced, and must await every entry before it sends that answer."""
    pending: list[Awaitable[None]] = []
    token = _DEFERRED.set(pending)
    try:
        yield pending
    finally:
        _DEFERRED.reset(token)


async def _leave_record(
    call: Awaitable[tuple[ToolResult, Awaitable[None]]], pending: list[Awaitable[None]]
) -> ToolResult:
    """The result of ``ainvoke_recorded``, its record's wait left to the transport."""
    result, recorded = await call
    pending.append(recorded)
    return result


class CallHandler:
    """The server's ``on_call_tool``."""

    def __init__(self, holder: KernelHolder) -> None:
        self.holder = holder
        self.inflight = 0
        """Calls admitted and not yet answered (event-loop thread only)."""
        self._running: dict[tuple[str, str], asyncio.Task[ToolResult]] = {}
        self._gone: set[tuple[str, str]] = set()

    def client_gone(self, session_id: str, request_id: str) -> None:
        """A 2025-era HTTP client disconnected from ``request_id``: stop that call."""
        key = (session_id, request_id)
        task = self._running.get(key)
        if task is not None and not task.done():
            self._gone.add(key)
            task.cancel()

    @staticmethod
    def capacity(gen: Generation) -> int:
        """Calls that may run (``[kernel] max_workers``) plus those that may wait."""
        doc = gen.kernel.policy.doc
        return doc.kernel.max_workers + doc.serve.max_queue

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        caller = current_caller()
        name = params.name
        with self.holder.use() as gen:
            if not gen.catalog.allows(name, caller):
                gen.kernel.audit.write(
                    "decision",
                    tenant=caller.tenant,
                    caller=caller.name,
                    skill=name[:80],
                    action="not_listed",
                    reason="no usable tool of this name for this caller",
                )
                return error_result("NOT_FOUND", f"no tool named {name[:80]!r}")
            if self.inflight >= self.capacity(gen):
                log.warning("overloaded", inflight=self.inflight, skill=name)
                return error_result(
                    "RATE_LIMITED",
                    f"the server is at capacity ({self.inflight} calls running or queued); "
                    "retry shortly",
                )
            self.inflight += 1
            try:
                return await self._call(ctx, params, gen, caller)
            finally:
                self.inflight -= 1

    async def _call(
        self,
        ctx: ServerRequestContext[Any, Any],
        params: types.CallToolRequestParams,
        gen: Generation,
        caller: Caller,
    ) -> types.CallToolResult | types.InputRequiredResult:
        name, arguments = params.name, params.arguments or {}
        st = gen.catalog.status(name)
        assert st is not None
        structured = gen.catalog.tools_output(name)
        modern = ctx.protocol_version in MODERN_PROTOCOL_VERSIONS
        approver = McpApproval()
        if modern and params.request_state is not None:
            state = read_state(params.request_state)
            response = (params.input_responses or {}).get(APPROVAL_KEY)
            if state is None or state["skill"] != name or state["principal"] != caller.principal:
                return error_result("APPROVAL_REQUIRED", "the approval state does not match")
            if not approved_by(response):
                return error_result("APPROVAL_REQUIRED", "the call was not approved")
            approver = McpApproval(str(state["binding"]))
        await self._prepare(ctx, gen, st.skill.runtime, name)
        context = InvocationContext(
            tenant=caller.tenant,
            caller=caller.name,
            roles=caller.roles,
            labels={"mcp_request_id": str(ctx.request_id), "protocol": ctx.protocol_version},
        )
        key = _session_key(ctx)
        result = await self._invoke(gen, name, arguments, context, approver, key)
        asked = approver.asked
        needs = result.error is not None and result.error.code == "APPROVAL_REQUIRED"
        if not needs or asked is None or approver.binding is not None:
            return tool_result(result, structured)
        if not _can_elicit(ctx):
            err = result.error
            assert err is not None
            return error_result(
                err.code,
                f"{err.message}; this client can answer neither an InputRequiredResult nor "
                "an elicitation, so nobody could be asked",
            )
        message = approval_message(asked)
        if modern:
            return types.InputRequiredResult(
                input_requests={
                    APPROVAL_KEY: types.ElicitRequest(
                        params=types.ElicitRequestFormParams(
                            message=message, requested_schema=APPROVAL_SCHEMA
                        )
                    )
                },
                request_state=state_for(asked, caller.principal),
            )
        ttl = gen.kernel.policy.doc.serve.approval_ttl_s
        try:
            with anyio.fail_after(ttl):
                answer = await ctx.session.elicit_form(
                    message, APPROVAL_SCHEMA, related_request_id=ctx.request_id
                )
        except TimeoutError:
            return error_result("APPROVAL_REQUIRED", f"no answer within {ttl:g} s")
        if not approved_by(answer):
            return error_result("APPROVAL_REQUIRED", "the call was not approved")
        again = await self._invoke(gen, name, arguments, context, McpApproval(asked.binding), key)
        return tool_result(again, structured)

    async def _invoke(
        self,
        gen: Generation,
        name: str,
        arguments: dict[str, Any],
        context: InvocationContext,
        approver: McpApproval,
        key: tuple[str, str] | None = None,
    ) -> ToolResult:
        """``kernel.ainvoke`` in its own asyncio task, so that a cancelled request cancels it
        once and then waits (shielded) until the guest has really stopped. ``key`` (session,
        request id) lets ``client_gone`` stop it when a 2025-era HTTP client vanishes."""
        # The answer goes out only once the call's audit record is on disk (flushed in the
        # kernel's pool thread; concurrent calls share one fsync), so a replica killed right
        # after answering leaves no completed call unrecorded: awaited here, or, within
        # ``records_deferred``, by the transport once the answer is built.
        pending = _DEFERRED.get()
        kernel = gen.kernel
        call: Awaitable[ToolResult]
        if pending is None:  # one hop: the pool thread flushes, then answers
            call = kernel.ainvoke(name, arguments, context=context, approver=approver, durable=True)
        else:
            call = _leave_record(
                kernel.ainvoke_recorded(name, arguments, context=context, approver=approver),
                pending,
            )
        task = asyncio.ensure_future(call)
        if key is not None:
            self._running[key] = task
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            if key is not None and key in self._gone and task.cancelled():
                # ainvoke re-raised only after the guest stopped; nobody reads this answer.
                log.info("call_cancelled", skill=name, invocation_id=context.invocation_id)
                return ToolResult.failure(
                    ErrorCode.CANCELLED, "the client disconnected; the call was stopped"
                )
            await self._stop(task, name, context)
            raise
        except BaseException:
            await self._stop(task, name, context)
            raise
        finally:
            if key is not None:
                self._running.pop(key, None)
                self._gone.discard(key)
        return result

    @staticmethod
    async def _stop(task: asyncio.Task[ToolResult], name: str, context: InvocationContext) -> None:
        """Cancel ``task`` and wait (shielded) until the call has stopped."""
        task.cancel()
        # CancelledError once the call stopped; shielded so that we really wait for it.
        with anyio.CancelScope(shield=True), contextlib.suppress(BaseException):
            await task
        log.info("call_cancelled", skill=name, invocation_id=context.invocation_id)

    async def _prepare(
        self, ctx: ServerRequestContext[Any, Any], gen: Generation, runtime: str, name: str
    ) -> None:
        """Prepare a skill on its first call in this generation (for a Python skill: build or
        load the runner), reporting progress when the client asked for it, so the skill's
        deadline is not spent on it. Later calls skip this (``Generation.prepared``)."""
        if name in gen.prepared or runtime == "native":
            return
        loop = asyncio.get_running_loop()
        messages: asyncio.Queue[str | None] = asyncio.Queue()

        def progress(text: str) -> None:
            loop.call_soon_threadsafe(messages.put_nowait, text)

        def work() -> None:
            try:
                gen.kernel.prepare([name], progress=progress)
            except Exception:  # the call itself then reports what is wrong
                log.exception("prepare_failed", skill=name)
            finally:
                loop.call_soon_threadsafe(messages.put_nowait, None)

        fut = loop.run_in_executor(None, work)
        what = "loading the Python runner" if runtime == "python" else f"preparing {name}"
        step = 0.0
        await ctx.session.report_progress(step, _PROGRESS_TOTAL, what)
        while (text := await messages.get()) is not None:
            step = min(step + 1.0, _PROGRESS_TOTAL - 0.5)
            await ctx.session.report_progress(step, _PROGRESS_TOTAL, text[:200])
        await fut
        gen.prepared.add(name)
        await ctx.session.report_progress(_PROGRESS_TOTAL, _PROGRESS_TOTAL, "ready")
