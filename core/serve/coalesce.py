"""One ``send(2)`` per answer: the HTTP protocol of ``bastion serve`` coalesces its writes.

Serving step ``transport (HTTP)``. uvicorn writes a response's status line and headers
(``http.response.start``) and then its body as two writes, so a client waiting for the answer
is woken twice (on a loaded machine each wake-up of the other process costs ~0.1 ms inside
``send``, bench/README.md). ``CoalescingHttpToolsProtocol`` is uvicorn's own httptools protocol
with its transport wrapped: writes made in one turn of the event loop are joined and sent at
the end of that turn, so a JSON answer (start and body come from the same task step) leaves
in one segment. Nothing is held past the loop's next iteration, so a streamed answer's events
(SSE progress, pings) go out as promptly as before; closing sends what is held first.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["CoalescingHttpToolsProtocol", "CoalescingTransport"]


class CoalescingTransport:
    """An ``asyncio.Transport`` stand-in whose ``write`` joins the writes of one loop turn.

    Everything but writing and closing is the wrapped transport's own (flow control, peer
    address, pausing reads), so uvicorn's back-pressure still sees the real socket buffer."""

    __slots__ = ("_held", "_loop", "_scheduled", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Hold ``data`` until the end of this loop turn (then one write of all held)."""
        if not data:
            return
        self._held.append(bytes(data))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Write what is held now, in one piece (dropped if the connection is gone)."""
        self._scheduled = False
        if not self._held:
            return
        data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
        self._held.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(b) for b in self._held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a ``CoalescingTransport``."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        wrapped: Any = CoalescingTransport(transport, self.loop)
        super().connection_made(wrapped)
