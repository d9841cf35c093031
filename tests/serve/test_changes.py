"""A policy change reaches connected clients as ``tools/list_changed`` (2025) or a
``subscriptions/listen`` event (2026-07-28); a broken new policy keeps the old one serving."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from mcp import Client

from .clients import http_client, stdio_client
from .conftest import ALICE, ERAS, policy_text, run_serve, wait_for


def _rewrite(path: Path, text: str) -> None:
    """Replace the policy and move its mtime forward (coarse file-system clocks)."""
    old = path.stat().st_mtime
    path.write_text(text)
    os.utime(path, (old + 2, old + 2))


@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_a_policy_change_tells_the_client(
    era: str, transport: str, pack: Path, tmp_path: Path, policy: Callable[..., Path]
) -> None:
    path = policy()
    disabled = policy_text(tmp_path, "[skills.echo]\nenabled = false\n")

    def opener(url: str) -> Callable[..., AbstractAsyncContextManager[Client]]:
        @asynccontextmanager
        async def open_client(**kw: Any) -> AsyncIterator[Client]:
            if transport == "stdio":
                async with stdio_client(path, pack, era, **kw) as c:
                    yield c
            else:
                async with http_client(url, ALICE, era, **kw) as c:
                    yield c

        return open_client

    async def body(connect: Callable[..., AbstractAsyncContextManager[Client]]) -> None:
        changed = anyio.Event()

        async def on_message(message: Any) -> None:
            if isinstance(message, types.ToolListChangedNotification):
                changed.set()

        async with connect(message_handler=on_message) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            assert "echo" in names
            if era == "legacy":
                _rewrite(path, disabled)
                with anyio.fail_after(30):
                    await changed.wait()
            else:
                async with c.listen(tools_list_changed=True) as sub:
                    _rewrite(path, disabled)
                    with anyio.fail_after(30):
                        event = await sub.__anext__()
                    assert type(event).__name__ == "ToolsListChanged"
            names = {t.name for t in (await c.list_tools()).tools}
            assert "echo" not in names
            r = await c.call_tool("echo", {})
            assert r.is_error and r.content[0].text == "NOT_FOUND: no tool named 'echo'"  # type: ignore[union-attr]

    if transport == "stdio":
        anyio.run(body, opener(""))
    else:
        with run_serve(path, pack) as s:
            anyio.run(body, opener(s.url))


def test_a_broken_policy_keeps_the_old_one_serving(
    pack: Path, tmp_path: Path, policy: Callable[..., Path]
) -> None:
    path = policy()
    with run_serve(path, pack) as s:
        _rewrite(path, policy_text(tmp_path) + "\n[limits]\ntimeout_ms = -5\n")

        def refused() -> dict[str, Any] | None:
            body = httpx.get(s.base + "/readyz", timeout=5).json()
            return body if "reload_refused" in body else None

        report = wait_for(refused, 30)
        assert "timeout_ms" in report["reload_refused"]
        assert report["generation"] == 1

        async def still_serving() -> None:
            async with http_client(s.url, ALICE, "legacy") as c:
                assert "echo" in {t.name for t in (await c.list_tools()).tools}
                r = await c.call_tool("echo", {"still": True})
                assert not r.is_error

        anyio.run(still_serving)
        # Fixed again: the next good policy is taken.
        _rewrite(path, policy_text(tmp_path, "[skills.echo]\nenabled = false\n"))
        wait_for(lambda: httpx.get(s.base + "/readyz", timeout=5).json()["generation"] == 2, 30)
        time.sleep(0)


def test_tokens_follow_a_policy_reload(
    pack: Path, tmp_path: Path, policy: Callable[..., Path]
) -> None:
    """A token added to (or removed from) the policy is accepted (refused) without a restart."""
    import hashlib

    path = policy()
    carol = "carol-token-0011223344556677"
    digest = hashlib.sha256(carol.encode()).hexdigest()
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "0"},
        },
    }
    with run_serve(path, pack) as s:

        def status(token: str) -> int:
            h = {**headers, "authorization": f"Bearer {token}"}
            return httpx.post(s.url, json=init, headers=h, timeout=10).status_code

        assert status(carol) == 401
        extra = f'[[serve.tokens]]\nname = "carol"\ntenant = "acme"\nsha256 = "{digest}"\n'
        _rewrite(path, policy_text(tmp_path, extra))
        wait_for(lambda: status(carol) == 200, 30)
        assert status(ALICE) == 200
        _rewrite(path, policy_text(tmp_path))
        wait_for(lambda: status(carol) == 401, 30)
