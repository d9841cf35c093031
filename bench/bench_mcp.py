"""MCP server overhead: a trivial WASM skill over stdio and HTTP vs ``kernel.invoke``.

Run: ``.venv/bin/python bench/bench_mcp.py [--calls N]``. In one run it measures the anchor
(``kernel.invoke`` of the echo skill in-process, before and after the server rows), then the
same call through the SDK's own client against a spawned ``bastion mcp`` (stdio) and
``bastion serve`` (HTTP keep-alive), on both protocol eras, and through a lean hand-built
JSON-RPC client against the same server (what the server adds, separated from the SDK
client's own work); then calls/s with 16 concurrent HTTP clients, and the start-up of
``bastion serve`` (to "listening" and to ``/readyz`` 200) with a warm cache. Prints medians,
p95, the added time per call and whether the 1 ms target is met; nothing is asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BASTION = str(Path(sys.executable).with_name("bastion"))

METHOD = """\
method: a trivial WASM skill (echo), process isolation, one caller at a time, medians.
  anchor      kernel.invoke in this process (no MCP, no HTTP, no audit flush)
  SDK client  the official mcp SDK client (httpx2 over keep-alive; stdio: a spawned
              bastion mcp) timed around call_tool: what an agent sees, client work included
  lean client one keep-alive http.client connection posting hand-built JSON-RPC to the same
              bastion serve (a few tens of us of client work): what the server adds
  /healthz    GET on the same server: uvicorn + Starlette + loopback TCP, the HTTP floor"""


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def _row(label: str, xs: list[float], anchor: float | None = None) -> None:
    med = statistics.median(xs) * 1000
    p95 = _pct(xs, 0.95) * 1000
    extra = "" if anchor is None else f"   added {med - anchor * 1000:7.3f} ms"
    print(f"  {label:<34} median {med:7.3f} ms   p95 {p95:7.3f} ms{extra}")


def build(tmp: Path, token: str) -> tuple[Path, Path]:
    from tests.sandbox.guestbuild import GUESTS, build_c

    pack = tmp / "pack"
    (pack / "echo").mkdir(parents=True)
    (pack / "echo" / "skill.wasm").write_bytes(build_c(GUESTS / "echo.c"))
    (pack / "echo" / "skill.toml").write_text(
        'name = "echo"\nversion = "1.0.0"\ndescription = "Echo."\nruntime = "wasm"\n'
        'entry = "skill.wasm"\ninput_schema = { type = "object" }\n'
    )
    (pack / "bastion-pack.toml").write_text('name = "b"\nversion = "1.0.0"\nskills = ["echo"]\n')
    policy = tmp / "bastion.toml"
    policy.write_text(
        f'[audit]\npath = "{tmp / "audit.jsonl"}"\n[kernel]\nmax_workers = 16\n'
        f'[serve]\nmax_queue = 64\n[[serve.tokens]]\nname = "bench"\n'
        f'sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'
    )
    return pack, policy


def bench_kernel(policy: Path, pack: Path, n: int, *, durable: bool = False) -> list[float]:
    """``kernel.invoke`` in this process; ``durable`` also waits for the audit record to be on
    disk (``audit.flush()``), as the server does before it answers."""
    from bastion import Kernel

    with Kernel.from_policy(policy, pack_paths=[pack], entry_points=False) as k:
        for _ in range(100):
            k.invoke("echo", {"v": 1})
        out = []
        for _ in range(n):
            t = time.perf_counter()
            r = k.invoke("echo", {"v": 1})
            if durable:
                k.audit.flush()
            out.append(time.perf_counter() - t)
            assert r.ok
        return out


async def _calls(client: Any, n: int) -> list[float]:
    await client.list_tools()  # as a client does first (2026: calls are checked against it)
    for _ in range(50):
        await client.call_tool("echo", {"v": 1})
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = await client.call_tool("echo", {"v": 1})
        out.append(time.perf_counter() - t)
        assert not r.is_error
    return out


class LeanClient:
    """A minimal MCP client: one keep-alive HTTP/1.1 connection (``http.client``) posting
    hand-built JSON-RPC, reading JSON or SSE answers. Its own cost is a few tens of us, so what
    it measures over the anchor is what the server adds (plus loopback TCP)."""

    def __init__(self, port: int, token: str, era: str) -> None:
        import http.client

        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.era = era
        self.headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        }
        self.next_id = 0
        if era == "legacy":
            _, headers = self._post(
                "initialize",
                {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "lean", "version": "1"},
                },
            )
            self.headers["mcp-session-id"] = headers["mcp-session-id"]
            self.headers["mcp-protocol-version"] = "2025-11-25"
            self._post("notifications/initialized", None, notify=True)

    def _post(
        self, method: str, params: dict[str, Any] | None, *, notify: bool = False
    ) -> tuple[Any, dict[str, str]]:
        import json

        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        headers = dict(self.headers)
        if not notify:
            self.next_id += 1
            msg["id"] = self.next_id
        if self.era != "legacy":
            msg["params"] = dict(msg.get("params") or {})
            msg["params"]["_meta"] = {
                "io.modelcontextprotocol/protocolVersion": self.era,
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "lean", "version": "1"},
            }
            headers["mcp-protocol-version"] = self.era
            headers["mcp-method"] = method
            if method == "tools/call":
                headers["mcp-name"] = params["name"] if params else ""
        self.conn.request("POST", "/mcp", json.dumps(msg), headers)
        resp = self.conn.getresponse()
        body = resp.read()
        got = {k.lower(): v for k, v in resp.getheaders()}
        if notify or resp.status == 202:
            return None, got
        if resp.status != 200:
            raise RuntimeError(f"{method}: HTTP {resp.status} {body[:300]!r}")
        if got.get("content-type", "").startswith("text/event-stream"):
            for line in body.decode().splitlines():
                if line.startswith("data:") and line[5:].strip():
                    obj = json.loads(line[5:])
                    if obj.get("id") == msg["id"]:
                        return obj, got
            raise RuntimeError(f"{method}: no answer in the event stream")
        return json.loads(body), got

    def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        answer, _ = self._post("tools/call", {"name": name, "arguments": arguments})
        result: dict[str, Any] = answer["result"]
        return result

    def close(self) -> None:
        self.conn.close()


def bench_lean(port: int, token: str, n: int, era: str) -> list[float]:
    c = LeanClient(port, token, era)
    try:
        for _ in range(50):
            c.call("echo", {"v": 1})
        out = []
        for _ in range(n):
            t = time.perf_counter()
            r = c.call("echo", {"v": 1})
            out.append(time.perf_counter() - t)
            assert not r.get("isError"), r
        return out
    finally:
        c.close()


def bench_floor(port: int, n: int) -> list[float]:
    """``GET /healthz`` on one keep-alive connection: uvicorn + Starlette + loopback TCP."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out = []
    for i in range(n + 50):
        t = time.perf_counter()
        conn.request("GET", "/healthz")
        conn.getresponse().read()
        if i >= 50:
            out.append(time.perf_counter() - t)
    conn.close()
    return out


def bench_stdio(policy: Path, pack: Path, n: int, mode: str, env: dict[str, str]) -> list[float]:
    import anyio
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    params = StdioServerParameters(
        command=BASTION, args=["--policy", str(policy), "--pack", str(pack), "mcp"], env=env
    )

    async def body() -> list[float]:
        async with Client(params, mode=mode, cache=None) as c:
            return await _calls(c, n)

    return anyio.run(body)


def _http_client(url: str, token: str, mode: str) -> Any:
    from contextlib import asynccontextmanager

    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    @asynccontextmanager
    async def open_client() -> Any:
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http,
            Client(streamable_http_client(url, http_client=http), mode=mode, cache=None) as c,
        ):
            yield c

    return open_client()


def bench_http(url: str, token: str, n: int, mode: str) -> list[float]:
    import anyio

    async def body() -> list[float]:
        async with _http_client(url, token, mode) as c:
            return await _calls(c, n)

    return anyio.run(body)


def bench_concurrent(url: str, token: str, clients: int, per_client: int, mode: str) -> float:
    import anyio

    async def one() -> None:
        async with _http_client(url, token, mode) as c:
            await c.list_tools()
            for _ in range(per_client):
                r = await c.call_tool("echo", {"v": 1})
                assert not r.is_error

    async def body() -> float:
        async with anyio.create_task_group() as tg:  # warm the connections first
            for _ in range(clients):
                tg.start_soon(one)
        t = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(clients):
                tg.start_soon(one)
        return clients * per_client / (time.perf_counter() - t)

    return anyio.run(body)


def start_serve(
    policy: Path, pack: Path, env: dict[str, str], log: Path
) -> tuple[Any, int, float, float]:
    import httpx

    t0 = time.perf_counter()
    with log.open("w") as err:
        proc = subprocess.Popen(
            [BASTION, "--policy", str(policy), "--pack", str(pack), "serve", "--port", "0"],
            stderr=err,
            stdout=subprocess.DEVNULL,
            env=env,
        )
    port = 0
    while not port:
        m = re.search(r"127\.0\.0\.1:(\d+)/mcp", log.read_text())
        port = int(m.group(1)) if m else 0
        if proc.poll() is not None:
            raise SystemExit(log.read_text())
        time.sleep(0.005)
    listening = time.perf_counter() - t0
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.005)
    return proc, port, listening, time.perf_counter() - t0


def _verdict(label: str, added_ms: float) -> None:
    met = "met" if added_ms < 1.0 else "NOT met"
    print(f"  {label:<58} {added_ms:6.3f} ms   target < 1 ms: {met}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--concurrent", type=int, default=16)
    a = ap.parse_args()
    print(f"nproc {os.cpu_count()}; load: {os.getloadavg()}")
    print(METHOD)
    tmp = Path(tempfile.mkdtemp(prefix="bench-mcp-"))
    token = secrets.token_urlsafe(24)
    env = dict(os.environ, BASTION_LOAD_PLUGINS="")
    try:
        pack, policy = build(tmp, token)
        anchor = bench_kernel(policy, pack, a.calls * 2)
        durable = bench_kernel(policy, pack, a.calls, durable=True)
        k_med = statistics.median(anchor)
        print(f"calls per path: {a.calls} (after 50 warm-up calls)")
        _row("kernel.invoke (anchor)", anchor)
        _row("kernel.invoke + audit.flush()", durable, k_med)
        stdio = {}
        for mode in ("legacy", "2026-07-28"):
            stdio[mode] = bench_stdio(policy, pack, a.calls, mode, env)
            _row(f"stdio  {mode} (SDK client)", stdio[mode], k_med)
        starts: list[tuple[float, float]] = []
        for _ in range(3):
            proc, port, listening, ready = start_serve(policy, pack, env, tmp / "serve.log")
            starts.append((listening, ready))
            if len(starts) < 3:
                proc.send_signal(signal.SIGINT)
                proc.wait(30)
        sdk: dict[str, list[float]] = {}
        lean: dict[str, list[float]] = {}
        try:
            url = f"http://127.0.0.1:{port}/mcp"
            _row("http   GET /healthz (HTTP floor)", bench_floor(port, a.calls), k_med)
            for mode in ("legacy", "2026-07-28"):
                lean[mode] = bench_lean(port, token, a.calls, mode)
                _row(f"http   {mode} (lean client)", lean[mode], k_med)
            for mode in ("legacy", "2026-07-28"):
                sdk[mode] = bench_http(url, token, a.calls, mode)
                _row(f"http   {mode} (SDK client)", sdk[mode], k_med)
            for mode in ("legacy", "2026-07-28"):
                per = max(20, a.calls // a.concurrent)
                rate = bench_concurrent(url, token, a.concurrent, per, mode)
                print(f"  {a.concurrent} concurrent HTTP clients, {mode:<10}  {rate:8.0f} calls/s")
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
        again = bench_kernel(policy, pack, a.calls)
        _row("kernel.invoke (anchor, again)", again)
        k2 = statistics.median(anchor + again)
        for i, (listening, ready) in enumerate(starts):
            print(
                f"  bastion serve start #{i + 1}: listening {listening * 1000:6.0f} ms, "
                f"/readyz 200 {ready * 1000:6.0f} ms (warm cache; target < 1 s)"
            )
        print(f"added per call over kernel.invoke (median {k2 * 1000:.3f} ms, both anchor runs):")
        for mode in ("legacy", "2026-07-28"):
            _verdict(
                f"HTTP keep-alive {mode}, server side (lean client)",
                (statistics.median(lean[mode]) - k2) * 1000,
            )
            _verdict(
                f"HTTP keep-alive {mode}, SDK client end to end",
                (statistics.median(sdk[mode]) - k2) * 1000,
            )
        for mode in ("legacy", "2026-07-28"):
            print(
                f"  stdio {mode}, SDK client end to end"
                f"{'':<25} {(statistics.median(stdio[mode]) - k2) * 1000:6.3f} ms"
            )
        flush_ms = (statistics.median(durable) - k_med) * 1000
        print(
            "  the durable audit flush alone (the server answers only once the call's record "
            f"is on disk; kernel.invoke does not wait): {flush_ms:.3f} ms"
        )
        d_med = statistics.median(durable)
        print(f"added over kernel.invoke + audit.flush() (median {d_med * 1000:.3f} ms, the same")
        print("durability as the server's answers):")
        for mode in ("legacy", "2026-07-28"):
            _verdict(
                f"HTTP keep-alive {mode}, server side (lean client)",
                (statistics.median(lean[mode]) - d_med) * 1000,
            )
        print(f"load after: {os.getloadavg()}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
