"""A throwaway HTTP server on 127.0.0.1 (port chosen by the OS), for the demo and the kit."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["serve_local"]


@contextmanager
def serve_local(
    handler: Callable[..., http.server.BaseHTTPRequestHandler], *, name: str = "bastion-local"
) -> Iterator[str]:
    """Serve ``handler`` on 127.0.0.1 in a daemon thread; yields the base URL, stops on exit."""
    server: Any = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
