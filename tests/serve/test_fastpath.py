"""The 2026-07-28 ``tools/call`` fast path (``bastion.serve.fastpath``) against a real server on
127.0.0.1: plain calls take it, its answers are the SDK path's answers byte for byte, and every
request that fails one of the SDK's checks (or is anything else) goes to the SDK, which refuses
it as before."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette

from bastion.serve import BastionServer, KernelHolder
from bastion.serve.auth import CurrentTokenVerifier, PolicyTokenVerifier
from bastion.serve.fastpath import ModernCallFastPath
from bastion.serve.http import build_app
from bastion.serve.readiness import Readiness

from .clients import http_client
from .conftest import ALICE, BOB, BOB_ENV, STATE_KEY_ENV, policy_text, read_audit, wait_for
from .inthread import served_on_a_thread

MODERN = "2026-07-28"
META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
    "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
}


@dataclass
class Fast:
    url: str
    port: int
    path: ModernCallFastPath
    audit: Path


@pytest.fixture(scope="module")
def fast(pack: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fast]:
    tmp = tmp_path_factory.mktemp("fastpath")
    mp = pytest.MonkeyPatch()
    mp.setenv("BASTION_LOAD_PLUGINS", "")
    mp.setenv(STATE_KEY_ENV, "k" * 40)
    mp.setenv(BOB_ENV, BOB)
    path = tmp / "bastion.toml"
    path.write_text(policy_text(tmp))
    holder = KernelHolder.from_args(str(path), [pack])
    holder.set_attach(lambda k: {"tokens": PolicyTokenVerifier.from_policy(k.policy)})
    bs = BastionServer(holder)
    tokens = CurrentTokenVerifier(lambda: holder.current.attachments["tokens"])

    def make(port: int) -> Starlette:
        return build_app(bs, Readiness(holder), host="127.0.0.1", port=port, token_verifier=tokens)

    try:
        with served_on_a_thread(make) as (base, port, app):
            yield Fast(base + "/mcp", port, app.state.fast_path, tmp / "audit.jsonl")
    finally:
        holder.close()
        mp.undo()


def _headers(name: str = "echo", **extra: str) -> dict[str, str]:
    h = {
        "authorization": f"Bearer {ALICE}",
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "mcp-protocol-version": MODERN,
        "mcp-method": "tools/call",
        "mcp-name": name,
    }
    h.update(extra)
    return h


def _call(name: str, arguments: Any, *, progress: bool = False, rid: int = 7) -> dict[str, Any]:
    meta: dict[str, Any] = dict(META)
    if progress:
        meta["progressToken"] = "p1"
    return {
        "jsonrpc": "2.0",
        "id": rid,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments, "_meta": meta},
    }


def _post(fast: Fast, body: Any, headers: dict[str, str]) -> tuple[httpx.Response, int]:
    """POST ``body``; the response and how many requests the fast path took for it."""
    before = fast.path.taken
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(fast.url, content=data, headers=headers, timeout=30)
    return r, fast.path.taken - before


def test_the_sdk_clients_calls_take_it_on_2026_only(fast: Fast) -> None:
    async def calls() -> None:
        for era in ("legacy", MODERN):
            before = fast.path.taken
            async with http_client(fast.url, ALICE, era) as c:
                await c.list_tools()
                r = await c.call_tool("echo", {"v": 1})
                assert not r.is_error and r.structured_content in (None, {"v": 1})
            assert fast.path.taken - before == (1 if era == MODERN else 0)

    anyio.run(calls)


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("echo", {"v": 1, "s": "héllo"}),  # a result
        ("nope", {}),  # unknown: NOT_FOUND
        ("admin_tool", {}),  # not this caller's: answers as unknown
        ("wants_net", {}),  # denied by the policy
        ("add", {"a": 1}),  # invalid input
        ("guarded", {}),  # needs approval: an InputRequiredResult with sealed state
    ],
)
def test_its_answer_is_the_sdk_paths_answer(fast: Fast, name: str, arguments: Any) -> None:
    """The same call with a progress token goes the SDK's way (it may stream progress); for a
    call that reports none, both answers must be the same bytes (sealed request state aside,
    which carries a fresh nonce each time)."""
    with httpx.Client() as http:  # warm: the first call of a skill in a generation prepares it
        http.post(fast.url, json=_call(name, arguments, progress=True), headers=_headers(name))
    got, took = _post(fast, _call(name, arguments), _headers(name))
    want, sdk_took = _post(fast, _call(name, arguments, progress=True), _headers(name))
    assert (took, sdk_took) == (1, 0)
    assert got.status_code == want.status_code == 200
    assert got.headers["content-type"] == want.headers["content-type"] == "application/json"
    if name != "guarded":
        assert got.content == want.content
    g, w = got.json(), want.json()
    for answer in (g, w):
        state = answer.get("result", {}).pop("requestState", None)
        assert (state is not None) == (name == "guarded")
    assert g == w
    if name == "echo":
        assert json.loads(g["result"]["content"][0]["text"]) == arguments


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"host": "evil.example"}, 421),  # DNS rebinding: wrong Host
        ({"origin": "http://evil.example"}, 403),  # DNS rebinding: wrong Origin
        ({"content-type": "text/plain"}, 400),
        ({"accept": "application/json"}, 406),  # the SDK streams: both types required
        ({"mcp-name": "other"}, 400),  # routing header disagrees with the body
        ({"mcp-protocol-version": "2099-01-01"}, 400),  # a version nobody serves
    ],
)
def test_a_request_failing_a_check_goes_to_the_sdk(
    fast: Fast, headers: dict[str, str], status: int
) -> None:
    r, took = _post(fast, _call("echo", {"v": 1}), _headers(**headers))
    assert took == 0
    assert r.status_code == status, r.text


def test_malformed_and_other_requests_go_to_the_sdk(fast: Fast) -> None:
    bodies: list[Any] = [
        b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", ',  # not JSON
        [_call("echo", {})],  # a batch
        {"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "echo"}},  # no id
        {"jsonrpc": "2.0", "id": {"x": 1}, "method": "tools/call", "params": {}},  # bad id
    ]
    for body in bodies:
        r, took = _post(fast, body, _headers())
        assert took == 0
        assert r.status_code in (202, 400), (body, r.status_code, r.text)
    listed = {"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {"_meta": META}}
    r, took = _post(fast, listed, _headers(**{"mcp-method": "tools/list"}))
    assert took == 0 and r.status_code == 200 and r.json()["result"]["tools"]


def test_a_duplicated_routing_header_goes_to_the_sdk(fast: Fast) -> None:
    raw = json.dumps(_call("echo", {"v": 1})).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in _headers().items())
    request = (
        f"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1:{fast.port}\r\n{head}mcp-name: echo\r\n"
        f"content-length: {len(raw)}\r\nconnection: close\r\n\r\n"
    ).encode() + raw
    before = fast.path.taken
    with socket.create_connection(("127.0.0.1", fast.port), timeout=30) as s:
        s.sendall(request)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert fast.path.taken == before
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]


def test_no_token_is_refused_before_it(fast: Fast) -> None:
    headers = _headers()
    del headers["authorization"]
    r, took = _post(fast, _call("echo", {"v": 1}), headers)
    assert (r.status_code, took) == (401, 0)
    wait_for(lambda: any(x.get("action") == "unauthenticated" for x in read_audit(fast.audit)))


def test_a_fast_call_is_audited_with_its_caller(fast: Fast) -> None:
    r, took = _post(fast, _call("echo", {"v": 42}, rid=99), _headers())
    assert took == 1 and r.json()["id"] == 99
    rec = [x for x in read_audit(fast.audit) if x["event"] == "invoke"][-1]
    assert (rec["skill"], rec["caller"], rec["tenant"], rec["outcome"]) == (
        "echo",
        "alice",
        "acme",
        "ok",
    )


_ENVELOPES: list[Any] = [
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo"}},
    {"jsonrpc": "2.0", "id": "a", "method": "tools/call"},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": None, "extra": [1]},
    {"jsonrpc": "2.0", "id": True, "method": "tools/call"},
    {"jsonrpc": "2.0", "id": 1.0, "method": "tools/call"},
    {"jsonrpc": "2.0", "id": None, "method": "tools/call"},
    {"jsonrpc": "2.0", "id": [1], "method": "tools/call"},
    {"jsonrpc": "2.0", "method": "tools/call"},
    {"jsonrpc": 2.0, "id": 1, "method": "tools/call"},
    {"jsonrpc": "2", "id": 1, "method": "tools/call"},
    {"id": 1, "method": "tools/call"},
    {"jsonrpc": "2.0", "id": 1, "method": 5},
    {"jsonrpc": "2.0", "id": 1},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": []},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": "x"},
    {"jsonrpc": "2.0", "id": -(2**70), "method": "tools/call", "params": {}},
]


@pytest.mark.parametrize("decoded", _ENVELOPES)
def test_its_envelope_check_is_the_models(decoded: Any) -> None:
    """The fast path checks the JSON-RPC envelope without building ``JSONRPCRequest``: it must
    accept exactly what the model accepts, with the same id and params."""
    from mcp_types import JSONRPCRequest
    from pydantic import ValidationError

    from bastion.serve.fastpath import _envelope

    try:
        model = JSONRPCRequest.model_validate(decoded)
        want = (model.id, model.params)
    except ValidationError:
        want = None
    got = _envelope(decoded)
    assert got == want
    if got is not None and want is not None:
        assert type(got[0]) is type(want[0])


@pytest.mark.parametrize(
    "result",
    [
        {"content": [{"type": "text", "text": 'héllo \u2028 "q" \\ </'}], "resultType": "complete"},
        {"structuredContent": {"a": None, "b": [None, {"c": None}], "f": 1.0, "n": 2**70}},
        {"isError": True, "content": [], "_meta": {"io.modelcontextprotocol/serverInfo": {}}},
        {"x": float("nan")},  # not JSON: the model's way
        {},
    ],
)
def test_its_answer_bytes_are_the_models(result: dict[str, Any]) -> None:
    from mcp_types import JSONRPCResponse

    from bastion.serve.fastpath import _answer_bytes, _wire

    for rid in (7, "r-1"):
        want = _wire(JSONRPCResponse(jsonrpc="2.0", id=rid, result=result)).encode()
        assert _answer_bytes(rid, result) == want


def test_a_wrong_token_is_refused_as_the_sdk_refuses_it(fast: Fast) -> None:
    """POST /mcp skips Starlette's app-wide layers (front.py) but not its authentication: a
    wrong token is the SDK's 401 with its ``WWW-Authenticate``, and is audited."""
    r, took = _post(fast, _call("echo", {"v": 1}), _headers(authorization="Bearer " + "x" * 40))
    assert (r.status_code, took) == (401, 0)
    assert r.json()["error"] == "invalid_token"
    assert r.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    wait_for(lambda: any(x.get("reason") == "wrong bearer token" for x in read_audit(fast.audit)))
    wrong = _headers(authorization="Bearer " + "x" * 40)
    other = httpx.get(fast.url, headers=wrong, timeout=30)  # not a POST: Starlette's way
    assert other.status_code == 401
    assert other.headers["www-authenticate"] == r.headers["www-authenticate"]


def test_its_header_dict_is_the_mappings() -> None:
    from starlette.datastructures import Headers

    from bastion.serve.fastpath import _header_dict

    headers = Headers(raw=[(b"a", b"1"), (b"mcp-name", b"x"), (b"a", b"2"), (b"x-\xe9", b"\xff")])
    got = _header_dict(headers)
    assert got == dict(headers) and list(got) == list(dict(headers))
