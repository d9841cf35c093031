"""``bastion mcp``: the MCP server on stdin/stdout, for Claude Code, Claude Desktop, VS Code.

Serving step ``transport (stdio)``: nothing but protocol goes to stdout (the SDK points fd 1 at
stderr while it serves, so stray output cannot corrupt the stream); logs go to stderr. Each
line is read with a cap and depth-checked (``limits.frame_problem``) before the SDK parses it;
a refused line is answered with a JSON-RPC error for its id when one can be read cheaply.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any, BinaryIO, Final, cast

import anyio
import anyio.to_thread
import mcp_types as types
import structlog
from mcp.server.context import ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError

from .limits import MAX_FRAME_BYTES, frame_problem
from .server import BastionServer

__all__ = ["REFUSED_METHOD", "BoundedLines", "serve_stdio"]

log = structlog.get_logger("bastion.serve")

REFUSED_METHOD: Final[str] = "bastion/refused"
"""The request a refused line is replaced with: its handler answers with the reason."""
_ID = re.compile(rb'"id"\s*:\s*(-?\d{1,18}|"[^"\\]{0,128}")')
_CHUNK: Final[int] = 64 * 1024


class BoundedLines:
    """Async iterator of stdin lines, each at most ``max_bytes`` and depth-checked."""

    def __init__(self, raw: BinaryIO, max_bytes: int = MAX_FRAME_BYTES) -> None:
        self._raw = raw
        self._max = max_bytes

    def __aiter__(self) -> BoundedLines:
        return self

    async def __anext__(self) -> str:
        line = await anyio.to_thread.run_sync(self._read_line, abandon_on_cancel=True)
        if line is None:
            raise StopAsyncIteration
        return line

    def _read_line(self) -> str | None:
        data = self._raw.readline(self._max + 1)
        if not data:
            return None
        problem: str | None
        if len(data) > self._max and not data.endswith(b"\n"):
            head = data[:512]
            while True:  # discard the rest of the line without keeping it
                more = self._raw.readline(_CHUNK)
                if not more or more.endswith(b"\n"):
                    break
            problem = f"message is over the {self._max}-byte limit"
        else:
            head = data[:512]
            problem = frame_problem(data, max_bytes=self._max)
        if problem is None:
            return data.decode("utf-8", "replace")
        log.warning("frame_refused", reason=problem)
        found = _ID.search(head)
        if found is None:
            return "{}\n"  # unparseable: the SDK reports it as a parse error
        msg_id = json.loads(found.group(1))
        return (
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": msg_id,
                    "method": REFUSED_METHOD,
                    "params": {"reason": problem},
                }
            )
            + "\n"
        )


async def _refused(ctx: ServerRequestContext[Any, Any], params: types.RequestParams) -> None:
    reason = str((ctx.params or {}).get("reason", "message refused"))[:200]
    raise MCPError(code=types.INVALID_REQUEST, message=reason)


async def serve_stdio(bs: BastionServer, *, watch_interval_s: float = 1.0) -> None:
    """Serve one client on stdin/stdout until it closes stdin."""
    bs.server.add_request_handler(REFUSED_METHOD, types.RequestParams, _refused)
    lines = BoundedLines(sys.stdin.buffer)
    async with (
        stdio_server(stdin=cast(Any, lines)) as (read, write),
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(bs.watch, watch_interval_s)
        await bs.server.run(read, write, bs.initialization_options())
        tg.cancel_scope.cancel()
