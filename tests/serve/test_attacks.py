"""Attacks on the MCP server: forged Host/Origin (DNS rebinding), oversized and deeply nested
JSON-RPC bodies (refused before parsing, on HTTP and stdio), a flood of calls beyond the pool
(refused at once, bounded memory), and clients that never read their responses."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest

from bastion.serve import MAX_FRAME_BYTES, MAX_FRAME_DEPTH

from .clients import http_client
from .conftest import ALICE, BASTION, Served, read_audit, run_serve, server_env, wait_for
from .test_http import HEADERS, INIT

AUTH = {**HEADERS, "authorization": f"Bearer {ALICE}"}
MODERN = {**AUTH, "mcp-protocol-version": "2026-07-28"}


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _served_ok(s: Served) -> None:
    async def body() -> None:
        async with http_client(s.url, ALICE, "legacy") as c:
            r = await c.call_tool("echo", {"alive": True})
            assert not r.is_error

    anyio.run(body)


class TestDnsRebinding:
    @pytest.mark.parametrize("headers", [AUTH, MODERN], ids=["2025", "2026"])
    @pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "127.0.0.1.nip.io:1"])
    def test_forged_host_is_refused(
        self, served: Served, headers: dict[str, str], host: str
    ) -> None:
        r = httpx.post(served.url, json=INIT, headers={**headers, "host": host}, timeout=10)
        assert r.status_code == 421
        assert "echo" not in r.text

    @pytest.mark.parametrize("headers", [AUTH, MODERN], ids=["2025", "2026"])
    def test_foreign_origin_is_refused(self, served: Served, headers: dict[str, str]) -> None:
        r = httpx.post(
            served.url, json=INIT, headers={**headers, "origin": "http://evil.example"}, timeout=10
        )
        assert r.status_code == 403

    def test_the_real_host_is_served(self, served: Served) -> None:
        r = httpx.post(served.url, json=INIT, headers=AUTH, timeout=10)
        assert r.status_code == 200

    def test_a_configured_public_name_is_accepted(self, pack: Path, policy: Any) -> None:
        """``[serve] allowed_hosts``: the name a load balancer forwards; others still 421."""
        path = policy()
        path.write_text(
            path.read_text().replace(
                "approval_ttl_s", 'allowed_hosts = ["mcp.example.test:*"]\napproval_ttl_s'
            )
        )
        with run_serve(path, pack) as s:
            ok = httpx.post(s.url, json=INIT, headers={**AUTH, "host": "mcp.example.test:443"})
            assert ok.status_code == 200
            bad = httpx.post(s.url, json=INIT, headers={**AUTH, "host": "other.example.test:443"})
            assert bad.status_code == 421


def _nested(depth: int, msg_id: int = 7) -> bytes:
    """A tools/call whose arguments nest ``depth`` arrays (built as text: no encoder recursion)."""
    deep = "[" * depth + "1" + "]" * depth
    return (
        f'{{"jsonrpc":"2.0","id":{msg_id},"method":"tools/call",'
        f'"params":{{"name":"echo","arguments":{{"deep":{deep}}}}}}}'
    ).encode()


_CALL_X = (
    b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"x":"'
)


class TestFrameLimits:
    def test_an_oversized_body_is_413_before_parsing(self, served: Served) -> None:
        body = _CALL_X % 1 + b"a" * (MAX_FRAME_BYTES + 10) + b'"}}}'
        r = httpx.post(served.url, content=body, headers=AUTH, timeout=30)
        assert r.status_code == 413
        assert "limit" in r.json()["error"]["message"]
        _served_ok(served)

    @pytest.mark.parametrize("depth", [MAX_FRAME_DEPTH + 1, 100_000])
    def test_a_deeply_nested_body_is_refused_before_parsing(
        self, served: Served, depth: int
    ) -> None:
        r = httpx.post(served.url, content=_nested(depth), headers=AUTH, timeout=30)
        assert r.status_code == 400
        assert "deeper" in r.json()["error"]["message"]
        _served_ok(served)

    def test_nesting_inside_strings_is_not_counted(self, served: Served) -> None:
        async def body() -> None:
            async with http_client(served.url, ALICE, "2026-07-28") as c:
                text = "[" * 5000 + "{" * 5000
                r = await c.call_tool("echo", {"s": text})
                assert not r.is_error and json.loads(r.content[0].text) == {"s": text}  # type: ignore[union-attr]

        anyio.run(body)

    def test_stdio_refuses_deep_and_oversized_lines_and_goes_on(
        self, stdio_policy: Path, pack: Path
    ) -> None:
        proc = subprocess.Popen(
            [BASTION, "--policy", str(stdio_policy), "--pack", str(pack), "mcp"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=server_env(),
        )
        assert proc.stdin is not None and proc.stdout is not None
        try:

            def send(obj: Any) -> None:
                proc.stdin.write(json.dumps(obj).encode() + b"\n")  # type: ignore[union-attr]
                proc.stdin.flush()  # type: ignore[union-attr]

            def answer(msg_id: int) -> dict[str, Any]:
                while True:
                    line = proc.stdout.readline()  # type: ignore[union-attr]
                    assert line, "bastion mcp closed stdout"
                    msg = json.loads(line)
                    if msg.get("id") == msg_id:
                        return msg

            send({**INIT, "params": {**INIT["params"], "protocolVersion": "2025-06-18"}})  # type: ignore[dict-item]
            assert "result" in answer(1)
            send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            proc.stdin.write(_nested(50_000) + b"\n")
            proc.stdin.flush()
            err = answer(7)["error"]
            assert err["code"] == types.INVALID_REQUEST and "deeper" in err["message"]
            proc.stdin.write(_CALL_X % 8 + b"a" * (3 * MAX_FRAME_BYTES) + b'"}}}\n')
            proc.stdin.flush()
            err = answer(8)["error"]
            assert "limit" in err["message"]
            send(
                {
                    "jsonrpc": "2.0",
                    "id": 9,
                    "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"ok": 1}},
                }
            )
            result = answer(9)["result"]
            assert json.loads(result["content"][0]["text"]) == {"ok": 1}
        finally:
            proc.stdin.close()
            proc.wait(30)


class TestOverload:
    def test_a_flood_beyond_the_pool_is_refused_at_once(self, pack: Path, policy: Any) -> None:
        """2 kernel workers + 2 queued: of 40 concurrent 300 ms calls most are refused with
        RATE_LIMITED at once, the admitted ones run, and the server's memory stays flat."""
        path = policy("[kernel]\nmax_workers = 2\n")
        text = path.read_text().replace("approval_ttl_s", "max_queue = 2\napproval_ttl_s")
        path.write_text(text)
        with run_serve(path, pack) as s:
            before = _rss_kib(s.proc.pid)
            outcomes: list[str] = []

            async def one(c: Any) -> None:
                r = await c.call_tool("spin", {})
                outcomes.append(r.content[0].text.split(":")[0])

            async def body() -> None:
                async with http_client(s.url, ALICE, "2026-07-28") as c:
                    for _ in range(3):
                        async with anyio.create_task_group() as tg:
                            for _ in range(40):
                                tg.start_soon(one, c)

            anyio.run(body)
            after = _rss_kib(s.proc.pid)
            assert set(outcomes) <= {"TIMEOUT", "RATE_LIMITED"}
            assert outcomes.count("RATE_LIMITED") >= 40  # far more than could be admitted
            assert outcomes.count("TIMEOUT") >= 3  # admitted calls ran to their limit
            assert after - before < 100 * 1024, (before, after)
            _served_ok(s)


class TestSlowReaders:
    def test_clients_that_never_read_do_not_stall_others(self, pack: Path, policy: Any) -> None:
        """20 connections pipeline requests and never read a byte of the answers; another
        client is still served, and the server's memory stays bounded."""
        with run_serve(policy(), pack) as s:
            before = _rss_kib(s.proc.pid)
            body = json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "tools/call",
                    "params": {
                        "name": "echo",
                        "arguments": {"pad": "x" * 60_000},
                        "_meta": {
                            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                            "io.modelcontextprotocol/clientCapabilities": {},
                        },
                    },
                }
            ).encode()
            # A complete 2026-07-28 call: each one really runs and answers 60 kB nobody reads.
            request = (
                f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{s.port}\r\n"
                f"Authorization: Bearer {ALICE}\r\nContent-Type: application/json\r\n"
                "Accept: application/json, text/event-stream\r\n"
                "MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\n"
                f"Mcp-Name: echo\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            socks = []
            for _ in range(20):
                sk = socket.create_connection(("127.0.0.1", s.port))
                sk.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sk.settimeout(0.5)
                for _ in range(30):
                    try:
                        sk.sendall(request)
                    except (TimeoutError, OSError):
                        break  # the server stopped reading us: back-pressure works
                socks.append(sk)
            try:
                t0 = time.monotonic()
                _served_ok(s)
                assert time.monotonic() - t0 < 120
                after = _rss_kib(s.proc.pid)
                assert after - before < 200 * 1024, (before, after)
            finally:
                for sk in socks:
                    sk.close()
            wait_for(lambda: s.proc.poll() is None, 5)
            _served_ok(s)
            # The unread calls really ran (their answers were produced, then held back).
            echoes = [
                r
                for r in read_audit(s.audit)
                if r["event"] == "invoke" and r["skill"] == "echo" and r["caller"] == "alice"
            ]
            assert len([r for r in echoes if r["outcome"] == "ok"]) >= len(socks)
