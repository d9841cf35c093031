"""The recording stub of ``bastion.sandbox.hostnet`` under a component skill (``hostlink``),
in-process and in a worker: fixtures answer, a miss says so, nothing reaches the server."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from bastion.executor import Capabilities, ExecutionRequest, Limits
from bastion.httpfixtures import HttpFixture, HttpFixtures
from bastion.netrule import NetRule
from tests.httpservers import LocalServer

pytestmark = pytest.mark.slow


@pytest.fixture
def outside() -> Iterator[LocalServer]:
    with LocalServer() as srv:
        srv.reply("/ping", body=b"pong")
        yield srv


def _request(entry: Path, inp: dict[str, str], caps: Capabilities) -> ExecutionRequest:
    return ExecutionRequest(
        skill="c",
        version="1.0.0",
        runtime="component",
        entry=entry,
        folder=entry.parent,
        input=inp,
        input_json=json.dumps(inp),
        caps=caps,
        limits=Limits(timeout_ms=5000),
        deadline=time.monotonic() + 5,
        invocation_id="inv-stub",
        logger=structlog.get_logger("test.stub"),
        audit=lambda kind, fields: None,
    )


@pytest.mark.parametrize("where", ["in-process", "worker"])
def test_a_component_is_answered_by_the_stub(
    where: str, echo_component: Path, outside: LocalServer
) -> None:
    from bastion.cachedir import default_cache_root
    from bastion.sandbox.component_exec import ComponentExecutor
    from bastion.sandbox.workers import WorkerPool, WorkerSettings

    url = outside.url("/ping")
    rule = NetRule.parse(outside.url("").rstrip("/"))
    fixture = HttpFixture("GET", url, 202, (), b"from the fixture")
    local = ComponentExecutor()
    local.prepare(echo_component)
    pool = WorkerPool(
        WorkerSettings(count=1, read_paths=(str(echo_component.parent),)),
        cache_root=default_cache_root(),
    )
    run = local.execute if where == "in-process" else pool.run

    def call(caps: Capabilities) -> dict[str, object]:
        return dict(json.loads(run(_request(echo_component, {"mode": "http", "url": url}, caps))))

    try:
        got = call(Capabilities(network=(rule,), http_stub=HttpFixtures((fixture,))))
        assert got["status"] == 202
        assert base64.b64decode(str(got["body_b64"])) == b"from the fixture"
        missing = call(Capabilities(network=(rule,), http_stub=HttpFixtures()))
        assert str(missing["error"]).startswith(f"no fixture for GET {url}")
        assert outside.requests == []
        assert call(Capabilities(network=(rule,)))["status"] == 200  # the anchor
        assert len(outside.requests) == 1
    finally:
        pool.close()
        local.close()
