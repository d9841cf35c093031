"""A real ``redis-server`` per test on a free loopback port (no persistence), stopped after.

``RedisServer.stop()`` / ``start()`` restart it on the same port, so a test can take the store
away mid-run and bring it back. Tests are skipped (with the install line) when Debian's
``redis-server`` is not installed; ``python3 dev.py setup`` installs it when run as root.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.state.redisserver import REDIS, RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if REDIS is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
