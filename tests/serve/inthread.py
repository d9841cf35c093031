"""A real ``bastion serve`` app on a loopback socket, served on a thread of the test process
(for tests that look at the app's own objects, e.g. its fast path or token verifier)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from starlette.applications import Starlette

from bastion.serve.http import serve_http

from .conftest import wait_for

__all__ = ["served_on_a_thread"]


@contextlib.contextmanager
def served_on_a_thread(make_app: Callable[[int], Starlette]) -> Iterator[tuple[str, int, Any]]:
    """``(base url, port, app)`` while ``make_app(port)`` serves on 127.0.0.1; ready when
    ``/readyz`` says 200; cancelled and joined on exit."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    app = make_app(port)
    loop = asyncio.new_event_loop()
    task: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        task["t"] = loop.create_task(serve_http(app, sock))
        with contextlib.suppress(BaseException):  # cancelled at teardown
            loop.run_until_complete(task["t"])

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(base + "/readyz", timeout=10).status_code == 200, 300, 0.1)
    try:
        yield base, port, app
    finally:
        loop.call_soon_threadsafe(task["t"].cancel)
        thread.join(30)
