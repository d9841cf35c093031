"""hostnet's transport seam: with stub fixtures, no name is resolved and no socket is opened;
rules, redirects and credential dropping still apply, and every request is recorded."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bastion.errors import ExecutionError
from bastion.httpfixtures import HttpFixture, HttpFixtures
from bastion.netrule import NetRule
from bastion.sandbox.hostnet import HostHttp


class Refuse:
    """A resolver that must never be asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def resolve(self, host: str, port: int) -> list[Any]:
        self.asked.append(host)
        raise OSError("the stub must not resolve")


@pytest.fixture
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Every socket connect in this process is recorded (and refused)."""
    seen: list[object] = []

    def connect(self: socket.socket, address: object) -> None:
        seen.append(address)
        raise OSError("no sockets in stub mode")

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield seen


def _client(stub: HttpFixtures, rules: tuple[str, ...], **kw: Any) -> tuple[HostHttp, list[Any]]:
    events: list[Any] = []
    client = HostHttp(
        [NetRule.parse(r) for r in rules],
        (),
        deadline=time.monotonic() + 5,
        resolver=Refuse(),
        audit=lambda kind, fields: events.append((kind, dict(fields))),
        stub=stub,
        **kw,
    )
    return client, events


def test_a_redirect_fixture_is_followed_and_credentials_dropped_across_origins(
    no_sockets: list[object],
) -> None:
    stub = HttpFixtures(
        (
            HttpFixture(
                "GET", "https://a.example/old", 302, (("location", "https://b.example/new"),), b""
            ),
            HttpFixture(
                "GET", "https://b.example/new", 200, (("content-type", "text/plain"),), b"moved"
            ),
        )
    )
    client, events = _client(stub, ("https://a.example", "https://b.example"), secrets=["s3cret"])
    resp = client.request(
        "GET",
        "https://a.example/old",
        [("Authorization", "Bearer x"), ("X-Key", "s3cret"), ("X-Ok", "1")],
    )
    assert (resp.status, resp.body, resp.url) == (200, b"moved", "https://b.example/new")
    hops = [f for k, f in events if k == "http"]
    assert [h["status"] for h in hops] == [302, 200]
    assert hops[0]["headers"] == [
        ["Authorization", "[REDACTED]"],
        ["X-Key", "[REDACTED]"],
        ["X-Ok", "1"],
    ]
    assert hops[1]["headers"] == [["X-Ok", "1"]]  # credentials dropped at the new origin
    assert all(h["fixture"] == "answered" and h["stub"] is True for h in hops)
    assert no_sockets == []


def test_rules_still_refuse_and_a_miss_names_the_url(no_sockets: list[object]) -> None:
    client, events = _client(HttpFixtures(), ("https://a.example",))
    with pytest.raises(ExecutionError) as denied:
        client.request("GET", "https://other.example/")
    assert denied.value.error_code.value == "NETWORK_DENIED"
    with pytest.raises(ExecutionError) as missing:
        client.request("POST", "https://a.example/x?y=1", body=b"12345")
    assert missing.value.error_code.value == "SKILL_ERROR"
    assert missing.value.message.startswith("no fixture for POST https://a.example/x?y=1")
    (last,) = [f for k, f in events if k == "http" and f.get("fixture") == "missing"]
    assert last["request_bytes"] == 5
    assert no_sockets == []
