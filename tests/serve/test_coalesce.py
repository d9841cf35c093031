"""``CoalescingTransport`` over a real socket pair: the writes of one event-loop turn leave in
one piece at the end of that turn, nothing is held past it, and closing sends what is held."""

from __future__ import annotations

import asyncio
import socket

from bastion.serve.coalesce import CoalescingTransport


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    b.setblocking(False)
    return a, b


def _available(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except BlockingIOError:
        return b""


async def _transport(sock: socket.socket) -> tuple[asyncio.Transport, CoalescingTransport]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, sock)
    return transport, CoalescingTransport(transport, loop)


def test_writes_of_one_turn_leave_together_at_its_end() -> None:
    async def main() -> tuple[bytes, bytes, bytes]:
        a, peer = _pair()
        real, t = await _transport(a)
        t.write(b"HTTP/1.1 200 OK\r\n\r\n")
        t.write(b"")
        t.write(bytearray(b"body"))
        held = _available(peer)  # still this turn: nothing sent yet
        await asyncio.sleep(0)  # the turn ends, the held writes go out
        await asyncio.sleep(0.05)
        sent = _available(peer)
        t.write(b"later")
        t.close()  # closing sends what is held first
        await asyncio.sleep(0.05)
        rest = _available(peer)
        peer.close()
        assert real.is_closing()
        return held, sent, rest

    held, sent, rest = asyncio.run(main())
    assert held == b""
    assert sent == b"HTTP/1.1 200 OK\r\n\r\nbody"
    assert rest == b"later"


def test_a_write_after_the_peer_is_gone_is_dropped_not_raised() -> None:
    async def main() -> int:
        a, peer = _pair()
        real, t = await _transport(a)
        t.write(b"x")
        real.abort()  # the connection is gone before the turn ends
        await asyncio.sleep(0)
        peer.close()
        return t.get_write_buffer_size()

    assert asyncio.run(main()) == 0
