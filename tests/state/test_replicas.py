"""Three ``bastion serve`` replicas behind a real HAProxy, sharing one real Redis, driven by 16
concurrent clients of the ``mcp`` SDK (stateless 2026-07-28 era: any request may land on any
replica). Limits hold for the deployment, not per replica; replicas are interchangeable."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bastion.guard import arguments_hash
from tests.state.cluster import HAPROXY, TOKENS, Cluster, build_pack
from tests.state.redisserver import RedisServer

pytestmark = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")

ERA = "2026-07-28"
CLIENTS = 16
DAILY = 40
BURST = 10
RATE = 0.5
SLOTS = 2

POLICY = f"""
[tenants.acme]
invocations_per_day = {DAILY}

[tenants.gamma]
max_concurrent = {SLOTS}

[rate_limits.tenants.beta]
rate = {RATE}
burst = {BURST}

[breaker]
failures = 3
window_s = 60
cooldown_s = 60
codes = ["SKILL_ERROR"]
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.state.redisserver import REDIS

    if REDIS is None:
        pytest.skip("redis-server is not installed")
    root = tmp_path_factory.mktemp("cluster")
    redis = RedisServer(root)
    redis.start()
    c = Cluster(root, redis, build_pack(root / "pack"), POLICY)
    try:
        c.start(3)
        yield c
    finally:
        c.stop()
        redis.stop()


@asynccontextmanager
async def client(
    url: str, caller: str, route: list[str] | None = None, **kw: Any
) -> AsyncIterator[Client]:
    """The SDK client as ``caller``; with ``route``, the n-th tools/call goes to ``route[n]``."""
    headers = {"Authorization": f"Bearer {TOKENS[caller][1]}"}
    calls = [0]

    async def pick(request: httpx2.Request) -> None:
        if route is None or b'"tools/call"' not in request.content:
            return
        request.headers["X-Replica"] = route[min(calls[0], len(route) - 1)]
        calls[0] += 1

    async with (
        httpx2.AsyncClient(
            headers=headers,
            timeout=httpx2.Timeout(30.0, read=120.0),
            event_hooks={"request": [pick]},
        ) as http,
        Client(streamable_http_client(url, http_client=http), mode=ERA, cache=None, **kw) as c,
    ):
        yield c


def _text(r: types.CallToolResult) -> str:
    block = r.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


def _code(r: types.CallToolResult) -> str:
    return _text(r).split(":", 1)[0] if r.is_error else "ok"


async def _storm(url: str, caller: str, skill: str, per_client: int) -> list[tuple[str, str]]:
    """16 concurrent clients, ``per_client`` calls each; (code, tag) of every call."""
    out: list[tuple[str, str]] = []

    async def one() -> None:
        async with client(url, caller) as c:
            for _ in range(per_client):
                tag = uuid.uuid4().hex
                r = await c.call_tool(skill, {"tag": tag})
                out.append((_code(r), tag))

    async with anyio.create_task_group() as tg:
        for _ in range(CLIENTS):
            tg.start_soon(one)
    return out


def _wait_records(
    cluster: Cluster, tags: set[str], timeout: float = 10.0
) -> dict[str, dict[str, Any]]:
    """The invoke record of each tagged call (by argument hash), polling for the flusher."""
    want = {arguments_hash({"tag": t}): t for t in tags}
    end = time.monotonic() + timeout
    found: dict[str, dict[str, Any]] = {}
    while time.monotonic() < end:
        found = {
            want[r["args_sha256"]]: r for r in cluster.all_records() if r.get("args_sha256") in want
        }
        if len(found) == len(want):
            break
        time.sleep(0.2)
    return found


def test_daily_quota_admits_exactly_n_through_the_load_balancer(cluster: Cluster) -> None:
    got = anyio.run(_storm, cluster.url, "quota", "echo", 4)
    codes = [c for c, _ in got]
    assert len(codes) == CLIENTS * 4
    assert codes.count("ok") == DAILY and codes.count("RATE_LIMITED") == CLIENTS * 4 - DAILY
    recs = _wait_records(cluster, {t for _, t in got})
    nodes = {r["node"] for r in recs.values()}
    assert len(nodes) == 3, "every replica served some of the calls"


def test_burst_limit_holds_across_replicas(cluster: Cluster) -> None:
    start = time.monotonic()
    got = anyio.run(_storm, cluster.url, "burst", "echo", 2)
    elapsed = time.monotonic() - start
    ok = [c for c, _ in got].count("ok")
    # One bucket for the tenant, whatever replica answers: burst, plus what refilled meanwhile.
    assert BURST <= ok <= BURST + int(RATE * elapsed) + 1, (ok, elapsed)


def test_concurrency_limit_never_exceeded(cluster: Cluster) -> None:
    got = anyio.run(_storm, cluster.url, "slots", "nap", 3)
    codes = [c for c, _ in got]
    assert codes.count("ok") >= SLOTS and "RATE_LIMITED" in codes
    recs = _wait_records(cluster, {t for c, t in got if c == "ok"})
    assert len(recs) == codes.count("ok")
    # Each record's "slot" is when the call ran inside its lease (one host here: one clock).
    spans = [(float(r["slot"][0]), float(r["slot"][1])) for r in recs.values()]
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak <= SLOTS, f"{peak} calls of one tenant ran at once (max_concurrent {SLOTS})"


def test_approval_asked_on_one_replica_is_completed_on_another(cluster: Cluster) -> None:
    tag = uuid.uuid4().hex
    asked: list[str] = []

    async def approve(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"approve": True})

    async def body() -> types.CallToolResult:
        async with client(cluster.url, "other", ["r1", "r2"], elicitation_callback=approve) as c:
            return await c.call_tool("guarded", {"tag": tag})

    r = anyio.run(body)
    assert not r.is_error, _text(r)
    assert json.loads(_text(r)) == {"tag": tag} and len(asked) == 1
    digest = arguments_hash({"tag": tag})
    end = time.monotonic() + 10
    r1: list[dict[str, Any]] = []
    r2: list[dict[str, Any]] = []
    while not (r1 and r2) and time.monotonic() < end:  # the audit flusher runs every 0.2 s
        r1 = [a for a in cluster.replicas[0].records("approval") if a.get("args_sha256") == digest]
        r2 = [a for a in cluster.replicas[1].records("approval") if a.get("args_sha256") == digest]
        time.sleep(0.1)
    assert r1 and not r1[0]["approved"], "r1 asked"
    assert r2 and r2[-1]["approved"], "r2 completed the call with the approval"


def test_breaker_opened_on_one_replica_refuses_on_all(cluster: Cluster) -> None:
    async def body() -> list[str]:
        codes = []
        for route in (["r1"], ["r1"], ["r1"], ["r2"], ["r3"], ["r1"]):
            async with client(cluster.url, "other", route) as c:
                codes.append(_code(await c.call_tool("fail", {})))
        return codes

    codes = anyio.run(body)
    assert codes[:3] == ["SKILL_ERROR"] * 3
    assert codes[3:] == ["CIRCUIT_OPEN"] * 3


def test_tool_list_change_on_one_replica_reaches_the_others(cluster: Cluster) -> None:
    r1, r2, r3 = cluster.replicas
    with r1.policy.open("a") as f:
        f.write("\n[skills.fail]\nenabled = false\n")
    told: list[Any] = []
    end = time.monotonic() + 30
    while len(told) < 2 and time.monotonic() < end:
        told = [r for r in (r2, r3) if "tools_changed_elsewhere" in r.log.read_text()]
        time.sleep(0.2)
    assert "reloaded" in r1.log.read_text()
    assert len(told) == 2, "r2 and r3 heard r1's change through Redis pub/sub"


def test_sigkill_of_a_replica_mid_run(cluster: Cluster) -> None:
    """Kill r3 while 16 clients call: the LB routes around it, its leases expire, and every
    call a client saw complete has its audit record on some replica."""
    results: list[tuple[str, str]] = []
    lost: list[str] = []

    async def one() -> None:
        for _ in range(6):
            tag = uuid.uuid4().hex
            try:  # a client per call: one whose call died with r3 is not reused
                async with client(cluster.url, "slots") as c:
                    r = await c.call_tool("nap", {"tag": tag})
            except Exception as exc:  # the call in flight on the killed replica
                lost.append(f"{type(exc).__name__}: {exc}")
                continue
            results.append((_code(r), tag))

    async def body() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(CLIENTS):
                tg.start_soon(one)
            await anyio.sleep(1.0)
            await anyio.to_thread.run_sync(cluster.kill, cluster.replicas[2])

    anyio.run(body)
    assert results, "the survivors answered"
    assert cluster.replicas[2].records(), "r3 served calls before it was killed"
    done = {t for c, t in results if c in ("ok", "RATE_LIMITED", "CANCELLED", "TIMEOUT")}
    recs = _wait_records(cluster, done)
    missing = done - set(recs)
    assert not missing, f"{len(missing)} completed calls have no audit record"

    # The survivors go on, and the dead replica's slots come back once its leases expire.
    async def after() -> list[str]:
        codes = []
        async with client(cluster.url, "slots") as c:
            for _ in range(6):
                codes.append(_code(await c.call_tool("nap", {"tag": uuid.uuid4().hex})))
        return codes

    time.sleep(3.5)  # lease_ttl_s = 3
    assert anyio.run(after) == ["ok"] * 6
