"""The MCP server driven by the SDK's own client, over stdio (a spawned ``bastion mcp``) and
Streamable HTTP (``bastion serve`` on 127.0.0.1), on both protocol eras."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from .clients import http_client, stdio_client
from .conftest import ALICE, ERAS, Served, read_audit, run_serve, wait_for

TRANSPORTS = ["stdio", "http"]
USABLE = {"echo", "add", "spin", "forever", "guarded", "admin_tool"}


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=ERAS)
def era(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def connect(transport: str, era: str, served: Served, stdio_policy: Path, pack: Path) -> Any:
    """``connect(**client_kw)``: an SDK client on this test's transport and era (as alice on
    HTTP; as the local user on stdio)."""

    @asynccontextmanager
    async def open_client(**kw: Any) -> AsyncIterator[Client]:
        if transport == "stdio":
            async with stdio_client(stdio_policy, pack, era, **kw) as c:
                yield c
        else:
            async with http_client(served.url, ALICE, era, **kw) as c:
                yield c

    return open_client


def _audit(transport: str, served: Served, stdio_policy: Path) -> Path:
    return served.audit if transport == "http" else stdio_policy.parent / "audit.jsonl"


def _text(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


def test_tools_are_the_callers_usable_skills_with_enforced_annotations(
    connect: Any, transport: str, era: str
) -> None:
    async def body() -> None:
        async with connect() as c:
            assert c.protocol_version == ("2026-07-28" if era != "legacy" else c.protocol_version)
            listed = {t.name: t for t in (await c.list_tools()).tools}
            # Denied (wants_net) never listed; admin_tool is role-limited for alice on HTTP.
            expected = USABLE if transport == "stdio" else USABLE - {"admin_tool"}
            assert set(listed) == expected
            echo = listed["echo"]
            assert echo.description == "Echo the input."
            assert echo.title == "Echo back"  # the manifest's title
            assert listed["spin"].title == "Spin"  # none declared: derived from the name
            assert echo.annotations is not None
            assert echo.annotations.read_only_hint is True
            assert echo.annotations.destructive_hint is False
            assert echo.annotations.idempotent_hint is True  # deterministic = true
            assert echo.annotations.open_world_hint is False
            assert listed["spin"].annotations.idempotent_hint is False  # type: ignore[union-attr]
            assert listed["add"].output_schema == {"type": "object", "required": ["sum"]}
            assert listed["add"].input_schema["properties"].keys() == {"a", "b"}

    anyio.run(body)


def test_calls_a_wasm_and_a_python_skill(connect: Any) -> None:
    async def body() -> None:
        async with connect() as c:
            r = await c.call_tool("echo", {"v": [1, "two", {"three": 3.5}]})
            assert not r.is_error
            assert json.loads(_text(r)) == {"v": [1, "two", {"three": 3.5}]}
            assert r.structured_content is None  # echo declares no output schema
            r = await c.call_tool("add", {"a": 2, "b": 40})
            assert not r.is_error, _text(r)
            assert r.structured_content == {"sum": 42}
            assert json.loads(_text(r)) == {"sum": 42}

    anyio.run(body)


def test_skill_failures_are_error_results_that_start_with_the_code(connect: Any) -> None:
    async def body() -> None:
        async with connect() as c:
            r = await c.call_tool("spin", {})
            assert r.is_error and _text(r).startswith("TIMEOUT: "), _text(r)
            r = await c.call_tool("add", {"a": "two", "b": 1})
            assert r.is_error and _text(r).startswith("INVALID_INPUT: "), _text(r)
            assert "input.a" in _text(r)

    anyio.run(body)


def test_unlisted_names_answer_like_unknown_ones(connect: Any, transport: str) -> None:
    async def body() -> None:
        async with connect() as c:
            hidden = ["wants_net"] + (["admin_tool"] if transport == "http" else [])
            for name in [*hidden, "no_such_tool", "echoo"]:
                r = await c.call_tool(name, {})
                assert r.is_error
                # Same shape for each; no "did you mean" naming a hidden skill.
                assert _text(r) == f"NOT_FOUND: no tool named {name!r}"

    anyio.run(body)


def _approver(answer: bool, seen: list[str]) -> Any:
    async def elicit(_ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        assert isinstance(params, types.ElicitRequestFormParams)
        seen.append(params.message)
        return types.ElicitResult(action="accept", content={"approve": answer})

    return elicit


def test_approval_round_trip_through_the_client(
    connect: Any, transport: str, served: Served, stdio_policy: Path
) -> None:
    tag = uuid.uuid4().hex
    asked: list[str] = []

    async def body() -> None:
        async with connect(elicitation_callback=_approver(True, asked)) as c:
            r = await c.call_tool("guarded", {"tag": tag})
            assert not r.is_error, _text(r)
            assert json.loads(_text(r)) == {"tag": tag}
        assert len(asked) == 1 and "guarded" in asked[0] and tag in asked[0]
        declined: list[str] = []
        async with connect(elicitation_callback=_approver(False, declined)) as c:
            r = await c.call_tool("guarded", {"tag": tag + "-no"})
            assert r.is_error and _text(r).startswith("APPROVAL_REQUIRED: "), _text(r)
        assert len(declined) == 1
        async with connect() as c:  # a client that cannot be asked
            r = await c.call_tool("guarded", {"tag": tag + "-nobody"})
            assert r.is_error and _text(r).startswith("APPROVAL_REQUIRED: ")
            assert "nobody could be asked" in _text(r)

    anyio.run(body)

    def approved() -> list[dict[str, Any]]:
        records = read_audit(_audit(transport, served, stdio_policy))
        return [r for r in records if r["event"] == "approval" and r.get("approved")]

    assert wait_for(approved, 20)[-1]["approver"] == "McpApproval"


def test_a_cancelled_call_stops_the_skill(
    connect: Any, transport: str, served: Served, stdio_policy: Path
) -> None:
    """``forever`` loops with a 30 s limit; the client gives up after 1 s: the guest stops at
    once (CANCELLED in the audit, well before its limit) and the server goes on serving."""
    audit = _audit(transport, served, stdio_policy)
    before = len(read_audit(audit))

    async def body() -> None:
        started, prepared = anyio.Event(), anyio.Event()

        async def on_progress(progress: float, total: float | None, _msg: str | None) -> None:
            started.set()
            if progress == total:
                prepared.set()

        async with connect() as c:
            await c.list_tools()  # as clients do (a 2026 client lists before its first call)
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    await c.call_tool("forever", {}, progress_callback=on_progress)
                    raise AssertionError("forever returned")

                tg.start_soon(call)
                # A first call prepares the skill (progress), then runs it: cancel once it runs.
                with anyio.move_on_after(1.0):
                    await started.wait()
                if started.is_set():
                    await prepared.wait()
                await anyio.sleep(0.5)
                tg.cancel_scope.cancel()
            r = await c.call_tool("echo", {"after": "cancel"})
            assert not r.is_error

    anyio.run(body)

    def cancelled() -> list[dict[str, Any]]:
        return [
            r
            for r in read_audit(audit)[before:]
            if r["event"] == "invoke" and r["skill"] == "forever"
        ]

    rec = wait_for(cancelled, 20)[0]
    assert rec["outcome"] == "CANCELLED"
    assert rec["duration_ms"] < 10_000  # stopped by the cancel, not by the 30 s limit


@pytest.mark.parametrize("tamper", ["arguments", "state", "expired"])
def test_approval_state_cannot_be_replayed(
    tamper: str, transport: str, served: Served, pack: Path, tmp_path: Path, policy: Any
) -> None:
    """2026-07-28: the sealed request state approves exactly one call: other arguments, a
    modified token, or an expired one are refused; the untouched state completes the call."""
    tag = uuid.uuid4().hex
    ttl = 1.0 if tamper == "expired" else 300.0

    with contextlib.ExitStack() as stack:
        url = served.url
        if transport == "http" and tamper == "expired":  # its own server with a 1 s TTL
            url = stack.enter_context(run_serve(policy(ttl_s=ttl), pack)).url
        _replay(tamper, transport, url, policy(ttl_s=ttl), pack, tag, ttl)


def _replay(
    tamper: str, transport: str, url: str, policy: Path, pack: Path, tag: str, ttl: float
) -> None:
    approve = {"bastion-approval": types.ElicitResult(action="accept", content={"approve": True})}

    @asynccontextmanager
    async def client() -> AsyncIterator[Client]:
        caps = _approver(True, [])
        if transport == "stdio":
            async with stdio_client(policy, pack, "2026-07-28", elicitation_callback=caps) as c:
                yield c
        else:
            async with http_client(url, ALICE, "2026-07-28", elicitation_callback=caps) as c:
                yield c

    async def body() -> None:
        async with client() as c:
            first = await c.session.call_tool("guarded", {"tag": tag}, allow_input_required=True)
            assert isinstance(first, types.InputRequiredResult)
            assert first.request_state and first.input_requests
            assert "bastion-approval" in first.input_requests
            state = first.request_state
            assert tag not in state  # sealed, not merely signed
            if tamper == "arguments":
                bad_args, bad_state = {"tag": tag + "-other"}, state
            elif tamper == "state":
                bad_args, bad_state = (
                    {"tag": tag},
                    state[:-4] + ("AAAA" if state[-4:] != "AAAA" else "BBBB"),
                )
            else:
                await anyio.sleep(ttl + 1.0)
                bad_args, bad_state = {"tag": tag}, state
            with pytest.raises(MCPError) as err:
                await c.session.call_tool(
                    "guarded",
                    bad_args,
                    input_responses=approve,  # type: ignore[arg-type]
                    request_state=bad_state,
                    allow_input_required=True,
                )
            assert "requestState" in str(err.value)
            if tamper != "expired":
                done = await c.session.call_tool(
                    "guarded",
                    {"tag": tag},
                    input_responses=approve,  # type: ignore[arg-type]
                    request_state=state,
                    allow_input_required=True,
                )
                assert isinstance(done, types.CallToolResult) and not done.is_error
                assert json.loads(_text(done)) == {"tag": tag}

    anyio.run(body)
