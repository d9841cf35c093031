"""Host functions from inside a worker: the worker performs the skill's mediated HTTP and sends
the audit record and the skill's log lines back to the kernel as frames; secrets reach only the
call that was granted them."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bastion.executor import Capabilities
from bastion.netrule import NetRule
from tests.httpservers import LocalServer
from tests.workers.conftest import Audit, MakePool, MakeRequest

FETCH = """
from bastion_sdk import http, log, secret

def run(url: str) -> dict:
    log.info("fetching", url=url)
    r = http.get(url, headers={"X-Key": secret("API_KEY")})
    return {"status": r.status, "body": r.body.decode()}
"""
PEEK = """
from bastion_sdk import secret, SecretNotGranted

def run() -> dict:
    try:
        return {"key": secret("API_KEY")}
    except SecretNotGranted as exc:
        return {"refused": str(exc)}
"""


class Recorder:
    """A structlog-shaped logger that keeps what it was given."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Callable[..., None]:
        def log(event: str, **fields: Any) -> None:
            self.lines.append((level, event, fields))

        return log


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with LocalServer() as srv:
        srv.reply("/hello", b"hi from the host", headers=[("Content-Type", "text/plain")])
        yield srv


def test_http_audit_and_log_cross_the_pipe(
    make_pool: MakePool, pyskill: Callable[[str, str], Path], request_for: MakeRequest,
    server: LocalServer,
) -> None:  # fmt: skip
    pool = make_pool()
    fetch, peek = pyskill("fetch", FETCH), pyskill("peek", PEEK)
    url = server.url("/hello")
    caps = Capabilities(
        network=(NetRule.parse(url.rsplit("/", 1)[0]),),
        private_allow=(ipaddress.ip_network("127.0.0.1/32"),),
        secrets={"API_KEY": "k-worker-123"},
    )
    audit, logger = Audit(), Recorder()
    req = request_for(fetch, {"url": url}, caps=caps, audit=audit)
    out = pool.run(dataclasses.replace(req, logger=logger))
    assert json.loads(out) == {"status": 200, "body": "hi from the host"}
    assert server.requests[-1].header("X-Key") == "k-worker-123"
    http_events = [f for k, f in audit.events if k == "http"]
    assert http_events and http_events[0]["status"] == 200
    assert "k-worker-123" not in json.dumps(audit.events)
    assert any(e == "skill.log" and "fetching" in f.get("text", "") for _, e, f in logger.lines)
    # The same worker's next call, of a skill granted nothing, cannot see the secret.
    assert json.loads(pool.run(request_for(peek))) == {
        "refused": "secret 'API_KEY' is not granted to this skill"
    }
