"""Operating the server: progress while the Python runner loads, logs on stderr carrying the
MCP request id (stdout is protocol only), and SIGHUP reloading ``bastion serve``."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
from mcp import Client

from .conftest import policy_text, run_serve, stdio_params, wait_for


def test_progress_is_reported_while_the_python_runner_loads(stdio_policy: Path, pack: Path) -> None:
    """A fresh ``bastion mcp`` loads the runner on the first Python call; a client that asked
    for progress hears about it, and the call then succeeds."""
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async def body() -> None:
        async with Client(stdio_params(stdio_policy, pack), mode="legacy", cache=None) as c:
            r = await c.call_tool("add", {"a": 1, "b": 2}, progress_callback=on_progress)
            assert not r.is_error and r.structured_content == {"sum": 3}

    anyio.run(body)
    assert seen, "no progress notification"
    assert seen[0][2] == "loading the Python runner"
    assert seen[-1][0] == seen[-1][1]  # finished
    assert [p for p, _, _ in seen] == sorted(p for p, _, _ in seen)


def test_logs_go_to_stderr_with_the_request_id(
    stdio_policy: Path, pack: Path, tmp_path: Path
) -> None:
    params = stdio_params(stdio_policy, pack)
    params.args = ["--log-level", "info", "--log-json", *params.args]
    errlog = (tmp_path / "stderr.log").open("w+")

    async def body() -> None:
        from mcp.client.stdio import stdio_client

        async with (
            stdio_client(params, errlog=errlog) as streams,
            Client(_Fixed(streams), mode="legacy", cache=None) as c,
        ):
            with anyio.move_on_after(1.0):
                await c.call_tool("forever", {})
            assert not (await c.call_tool("echo", {})).is_error

    anyio.run(body)
    errlog.flush()

    def logged() -> list[dict[str, Any]]:
        out = []
        for line in Path(errlog.name).read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return [r for r in out if r.get("event") == "call_cancelled"]

    rec = wait_for(logged, 20)[0]
    assert rec["skill"] == "forever" and rec["mcp_request_id"] and rec["mcp_method"] == "tools/call"


class _Fixed:
    """A transport that hands out already-open streams (so the test owns ``errlog``)."""

    def __init__(self, streams: Any) -> None:
        self.streams = streams

    async def __aenter__(self) -> Any:
        return self.streams

    async def __aexit__(self, *exc: object) -> None:
        return None


def test_sighup_reloads_serve(pack: Path, tmp_path: Path, policy: Any) -> None:
    path = policy()
    with run_serve(path, pack) as s:
        # Same mtime on purpose: only the signal can make the server look again.
        st = path.stat()
        path.write_text(policy_text(tmp_path, "[skills.guarded]\nenabled = false\n"))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.kill(s.proc.pid, signal.SIGHUP)
        wait_for(lambda: httpx.get(s.base + "/readyz", timeout=10).json()["generation"] == 2, 30)

        async def names() -> set[str]:
            from .clients import http_client
            from .conftest import ALICE

            async with http_client(s.url, ALICE, "2026-07-28") as c:
                return {t.name for t in (await c.list_tools()).tools}

        assert "guarded" not in anyio.run(names)
        assert isinstance(types.Tool, type)


_STDIO_CLIENT = """
import sys
import anyio
sys.path.insert(0, {root!r})
from pathlib import Path
from tests.serve.clients import stdio_client

async def main() -> None:
    async with stdio_client(Path({policy!r}), Path({pack!r}), "legacy") as c:
        await c.list_tools()
        assert not (await c.call_tool("echo", {{}})).is_error
        await c.call_tool("forever", {{}}, progress_callback=progress)

async def progress(p: float, total: float | None, _m: str | None) -> None:
    if p == total:
        print("running", flush=True)

anyio.run(main)
"""


def test_a_vanished_stdio_client_stops_the_call(stdio_policy: Path, pack: Path) -> None:
    """The client is killed mid-call: ``bastion mcp`` reads EOF, stops the running skill
    (audit: CANCELLED, long before its 30 s limit) and exits."""
    import subprocess
    import sys
    import time

    from .conftest import read_audit

    audit = stdio_policy.parent / "audit.jsonl"
    before = len(read_audit(audit))
    root = str(Path(__file__).resolve().parents[2])
    script = _STDIO_CLIENT.format(root=root, policy=str(stdio_policy), pack=str(pack))
    client = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout is not None and client.stdout.readline().strip() == "running"
        time.sleep(1.0)
    finally:
        client.kill()
        client.wait(30)

    def stopped() -> list[dict[str, Any]]:
        return [
            r
            for r in read_audit(audit)[before:]
            if r["event"] == "invoke" and r["skill"] == "forever"
        ]

    rec = wait_for(stopped, 25)[0]
    assert rec["outcome"] == "CANCELLED" and rec["duration_ms"] < 20_000
