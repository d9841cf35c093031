"""``bastion serve`` as an HTTP service: bearer tokens, per-token tool lists, 401s that teach
nothing, tenant-bound approval state, health endpoints, and the loopback-only default."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from .clients import http_client
from .conftest import (
    ALICE,
    BASTION,
    BOB,
    ERAS,
    Served,
    read_audit,
    run_serve,
    server_env,
    wait_for,
)

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    },
}
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


@pytest.mark.parametrize("era", ERAS)
def test_each_token_sees_its_own_tools(served: Served, era: str) -> None:
    async def names(token: str) -> set[str]:
        async with http_client(served.url, token, era) as c:
            return {t.name for t in (await c.list_tools()).tools}

    alice = anyio.run(names, ALICE)
    bob = anyio.run(names, BOB)
    assert "admin_tool" not in alice and "echo" in alice  # [roles.reader]
    assert "admin_tool" in bob  # [roles.admin] skills = ["*"]
    assert "wants_net" not in alice | bob  # denied for everyone


@pytest.mark.parametrize(
    ("auth", "reason"),
    [(None, "no bearer token"), ("Bearer not-a-valid-token-at-all", "wrong bearer token")],
)
def test_missing_or_wrong_token_is_401_and_audited(
    served: Served, auth: str | None, reason: str
) -> None:
    headers = dict(HEADERS)
    if auth:
        headers["authorization"] = auth
    before = len(read_audit(served.audit))
    r = httpx.post(served.url, json=INIT, headers=headers, timeout=10)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    for name in ("echo", "guarded", "admin_tool", "add"):  # learns nothing about skills
        assert name not in r.text

    def recorded() -> list[dict[str, Any]]:
        return [
            rec
            for rec in read_audit(served.audit)[before:]
            if rec["event"] == "decision" and rec.get("action") == "unauthenticated"
        ]

    rec = wait_for(recorded, 20)[-1]
    assert rec["reason"] == reason
    assert "not-a-valid-token" not in str(rec)  # the presented token is never written


@pytest.mark.parametrize("era", ERAS)
def test_the_sdk_client_without_a_token_is_refused(served: Served, era: str) -> None:
    async def body() -> None:
        async with http_client(served.url, None, era) as c:
            await c.list_tools()

    before = len(read_audit(served.audit))
    try:
        anyio.run(body)
    except BaseException as exc:  # the SDK surfaces the 401 as an MCPError (maybe grouped)
        leaves = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
        while any(isinstance(e, BaseExceptionGroup) for e in leaves):
            leaves = tuple(
                x
                for e in leaves
                for x in (e.exceptions if isinstance(e, BaseExceptionGroup) else (e,))
            )
        assert any(isinstance(e, MCPError) for e in leaves), leaves
    else:
        raise AssertionError("listing tools without a token succeeded")
    wait_for(
        lambda: any(
            r.get("action") == "unauthenticated" for r in read_audit(served.audit)[before:]
        ),
        20,
    )


def test_approval_state_is_bound_to_the_tenant(served: Served) -> None:
    """Alice (tenant acme) is asked; Bob (tenant beta) replaying her sealed state is refused."""
    tag = uuid.uuid4().hex
    approve = {"bastion-approval": types.ElicitResult(action="accept", content={"approve": True})}

    async def elicit(_ctx: Any, _params: Any) -> types.ElicitResult:
        return types.ElicitResult(action="accept", content={"approve": True})

    async def body() -> None:
        async with http_client(served.url, ALICE, "2026-07-28", elicitation_callback=elicit) as a:
            first = await a.session.call_tool("guarded", {"tag": tag}, allow_input_required=True)
        assert isinstance(first, types.InputRequiredResult) and first.request_state
        async with http_client(served.url, BOB, "2026-07-28", elicitation_callback=elicit) as b:
            with pytest.raises(MCPError) as err:
                await b.session.call_tool(
                    "guarded",
                    {"tag": tag},
                    input_responses=approve,  # type: ignore[arg-type]
                    request_state=first.request_state,
                    allow_input_required=True,
                )
        assert "requestState" in str(err.value)

    anyio.run(body)


def test_health_ready_and_metrics(served: Served) -> None:
    assert httpx.get(served.base + "/healthz", timeout=10).json() == {"ok": True}
    ready = httpx.get(served.base + "/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"sandbox": True, "policy": True, "audit": True}

    async def call() -> None:
        async with http_client(served.url, ALICE, "legacy") as c:
            assert not (await c.call_tool("echo", {"m": 1})).is_error

    anyio.run(call)
    text = httpx.get(served.base + "/metrics", timeout=10).text
    assert 'bastion_skill_calls_total{outcome="ok",skill="echo"}' in text


def _heavy_module(functions: int = 16_000) -> bytes:
    """A valid WASI command whose compile takes seconds (thousands of functions)."""
    import wasmtime

    funcs = []
    for i in range(functions):
        expr = "(local.get 0)"
        for j in range(20):
            expr = f"(i64.xor (i64.mul {expr} (i64.const {i * 31 + j + 1})) (i64.const {j}))"
        funcs.append(f'(func (export "f{i}") (param i64) (result i64) {expr})')
    wat = '(module (memory (export "memory") 1) (func (export "_start")) ' + "\n".join(funcs) + ")"
    return bytes(wasmtime.wat2wasm(wat))


def test_readyz_is_503_until_the_sandbox_is_ready(tmp_path: Path) -> None:
    """With an empty compile cache the skill must be compiled first: ``/healthz`` answers at
    once, ``/readyz`` says 503 while preparing, then 200."""
    pack = tmp_path / "heavy-pack"
    (pack / "heavy").mkdir(parents=True)
    (pack / "heavy" / "skill.wasm").write_bytes(_heavy_module())
    (pack / "heavy" / "skill.toml").write_text(
        'name = "heavy"\nversion = "1.0.0"\ndescription = "Slow to compile."\n'
        'runtime = "wasm"\nentry = "skill.wasm"\ninput_schema = { type = "object" }\n'
    )
    (pack / "bastion-pack.toml").write_text(
        'name = "heavy"\nversion = "1.0.0"\nskills = ["heavy"]\n'
    )
    path = tmp_path / "bastion.toml"
    path.write_text(f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n')
    env = dict(server_env(), BASTION_CACHE_DIR=str(tmp_path / "cold-cache"))
    seen: list[int] = []

    def poll(s: Served) -> bool:
        seen.append(httpx.get(s.base + "/readyz", timeout=30).status_code)
        return seen[-1] == 200

    with run_serve(path, pack, ready=False, env=env) as s:
        assert httpx.get(s.base + "/healthz", timeout=30).status_code == 200
        first = httpx.get(s.base + "/readyz", timeout=30)
        wait_for(lambda: poll(s), 600, 0.1)
        done = httpx.get(s.base + "/readyz", timeout=30).json()
    assert seen[0] == 503 and seen[-1] == 200
    if first.status_code == 503:  # still preparing when asked (nearly always: seconds of compile)
        body = first.json()
        assert body["checks"]["sandbox"] is False and body["preparing"] is True
        assert any(r.startswith("sandbox: preparing the skills") for r in body["reasons"])
    assert done["reasons"] == [] and done["checks"] == {
        "sandbox": True,
        "policy": True,
        "audit": True,
    }


def test_readyz_is_503_while_the_audit_log_fails_and_200_once_it_heals(
    pack: Path, tmp_path: Path, policy: Any
) -> None:
    """Another process swaps the audit file for ``/dev/full``: the next record fails to write,
    ``/readyz`` says 503 with the cause (no host path), and 200 again once the path is a file."""
    path = policy()
    with run_serve(path, pack) as s:
        audit = s.audit
        os.symlink("/dev/full", str(audit) + ".new")
        os.replace(str(audit) + ".new", audit)
        # Any record makes the log try the disk: a 401 writes a decision record.
        assert httpx.post(s.url, json={}, timeout=10).status_code == 401

        def unready() -> dict[str, Any] | None:
            r = httpx.get(s.base + "/readyz", timeout=10)
            return r.json() if r.status_code == 503 else None

        body = wait_for(unready, 30)
        assert body["checks"]["audit"] is False and body["checks"]["sandbox"] is True
        (reason,) = [r for r in body["reasons"] if r.startswith("audit: ")]
        assert "failing" in reason or "refusing" in reason
        text = json.dumps(body)
        assert str(tmp_path) not in text and "audit.jsonl" not in text  # no host path
        audit.unlink()  # the log reopens a regular file at its next retry
        wait_for(lambda: httpx.get(s.base + "/readyz", timeout=10).status_code == 200, 60)
    records = read_audit(audit)
    assert any(r.get("action") == "unauthenticated" for r in records)  # kept, then written


def test_non_loopback_without_tokens_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bastion.toml"
    path.write_text(f'[audit]\npath = "{tmp_path / "a.jsonl"}"\n')
    p = subprocess.run(
        [BASTION, "--policy", str(path), "serve", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env=server_env(),
    )
    assert p.returncode == 2
    assert "refusing to serve on '0.0.0.0' without authentication" in p.stderr
    assert "[[serve.tokens]]" in p.stderr
    assert "Traceback" not in p.stderr


_VANISHING_CLIENT = """
import sys
import anyio
sys.path.insert(0, {root!r})
from tests.serve.clients import http_client

async def main() -> None:
    async with http_client({url!r}, {token!r}, {mode!r}) as c:
        await c.list_tools()
        print("calling", flush=True)
        await c.call_tool("forever", {{}})

anyio.run(main)
"""


@pytest.mark.parametrize("era", ERAS)
def test_a_client_that_vanishes_mid_call_stops_the_call(served: Served, era: str) -> None:
    """The client process is killed while ``forever`` (30 s limit) runs: on both eras the call
    is stopped (2026: the POST is the call; 2025: the session outlives the client, so the
    server watches the POST's disconnect) and the audit says CANCELLED."""
    import sys
    import time

    root = str(Path(__file__).resolve().parents[2])
    script = _VANISHING_CLIENT.format(root=root, url=served.url, token=ALICE, mode=era)
    before = len(read_audit(served.audit))
    client = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout is not None and client.stdout.readline().strip() == "calling"
        time.sleep(2.5)  # the call is running in the guest by now
    finally:
        client.kill()
        client.wait(30)

    def stopped() -> list[dict[str, Any]]:
        return [
            r
            for r in read_audit(served.audit)[before:]
            if r["event"] == "invoke" and r["skill"] == "forever"
        ]

    rec = wait_for(stopped, 25)[0]
    assert rec["outcome"] == "CANCELLED"
    assert rec["duration_ms"] < 20_000
