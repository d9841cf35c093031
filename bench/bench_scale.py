"""Scale-out costs: what the Redis state backend adds per call, and MCP calls/s through HAProxy.

Run on demand: ``.venv/bin/python bench/bench_scale.py [--skip-lb]``. Needs Debian's
``redis-server`` (and ``haproxy`` for the second part); starts its own on free loopback ports
and stops them. Prints figures and ratios against anchors measured in the same run; asserts
nothing.

1. ``kernel.invoke`` of a trivial native skill with skill and tenant rate limits, a daily quota,
   a concurrency limit and a breaker: in-process backend vs Redis (rounds interleaved, so load
   changes hit both alike). Anchor: one Redis ``PING`` round trip.
2. 16 concurrent ``mcp`` SDK clients (2026-07-28 era) calling a WASM echo skill through HAProxy
   in front of 1 and then 3 ``bastion serve`` replicas sharing Redis: calls/s, p50, p99.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bastion import Kernel, hookimpl, load_policy, native_skill  # noqa: E402
from bastion.audit import NullAudit  # noqa: E402
from bastion.result import InvocationContext  # noqa: E402
from tests.state.redisserver import REDIS, RedisServer  # noqa: E402


@native_skill(name="add", version="1.0.0", description="Add.", input_schema={"type": "object"})
def add(a: float = 1, b: float = 2) -> dict[str, float]:
    return {"sum": a + b}


class Plugin:
    @hookimpl
    def bastion_skills(self) -> list[Any]:
        return [add]


LIMITS = """
[rate_limits.default]
rate = 1000000
burst = 1000000
[rate_limits.tenant_default]
rate = 1000000
burst = 1000000
[tenants."*"]
invocations_per_day = 100000000
max_concurrent = 64
[breaker]
failures = 5
"""


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def per_call(redis_url: str, rounds: int, n: int) -> None:
    os.environ["BASTION_LOAD_PLUGINS"] = ""
    kernels = {
        "in-process": Kernel(
            load_policy(text=LIMITS), plugins=[Plugin()], entry_points=False, audit=NullAudit()
        ),
        "redis": Kernel(
            load_policy(text=LIMITS + f'[state]\nurl = "{redis_url}"\nnamespace = "bench"\n'),
            plugins=[Plugin()],
            entry_points=False,
            audit=NullAudit(),
        ),
    }
    import redis

    client = redis.Redis.from_url(redis_url)
    ping = []
    for _ in range(2000):
        t = time.perf_counter()
        client.ping()
        ping.append((time.perf_counter() - t) * 1e6)
    client.close()
    times: dict[str, list[float]] = {k: [] for k in kernels}
    ctx = InvocationContext(tenant="acme")
    for k in kernels.values():  # warm up
        for _ in range(200):
            assert k.invoke("add", {}, context=ctx).ok
    for _ in range(rounds):
        for name, k in kernels.items():
            for _ in range(n):
                t = time.perf_counter()
                r = k.invoke("add", {}, context=ctx)
                times[name].append((time.perf_counter() - t) * 1e6)
                assert r.ok, r.error
    for k in kernels.values():
        k.close()
    print(f"\n1. kernel.invoke with limits, quotas and a breaker ({rounds} x {n} calls each)")
    print(
        f"   anchor: Redis PING round trip   p50 {pct(ping, 0.5):7.1f} us"
        f"  p99 {pct(ping, 0.99):7.1f} us"
    )
    for name, xs in times.items():
        print(
            f"   {name:<11} p50 {pct(xs, 0.5):7.1f} us  p99 {pct(xs, 0.99):7.1f} us"
            f"  mean {statistics.fmean(xs):7.1f} us"
        )
    added = pct(times["redis"], 0.5) - pct(times["in-process"], 0.5)
    print(
        f"   added by Redis (p50): {added:.1f} us per call = {added / pct(ping, 0.5):.1f} PINGs"
        f" (target < 500 us)"
    )


def through_lb(redis: RedisServer, root: Path, calls_per_client: int) -> None:
    import anyio

    from tests.state.cluster import HAPROXY, Cluster, build_pack

    if HAPROXY is None:
        print("\n2. skipped: haproxy is not installed")
        return
    pack = build_pack(root / "pack")
    print(f"\n2. MCP tools/call of a WASM echo through HAProxy, 16 clients x {calls_per_client}")
    for n in (1, 3):
        (root / f"c{n}").mkdir()
        cluster = Cluster(root / f"c{n}", redis, pack, "")
        try:
            cluster.start(n)
            lat, wall = anyio.run(_lb_storm, cluster.url, calls_per_client)
            print(
                f"   {n} replica(s): {len(lat) / wall:7.1f} calls/s  p50 {pct(lat, 0.5):6.1f} ms"
                f"  p99 {pct(lat, 0.99):6.1f} ms  ({len(lat)} calls in {wall:.1f} s)"
            )
        finally:
            cluster.stop()


async def _lb_storm(url: str, calls_per_client: int) -> tuple[list[float], float]:
    """16 SDK clients through the load balancer; every call's latency (ms) and the wall time."""
    import anyio
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    from tests.state.cluster import TOKENS

    lat: list[float] = []

    async def one() -> None:
        headers = {"Authorization": f"Bearer {TOKENS['other'][1]}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=60) as http,
            Client(
                streamable_http_client(url, http_client=http), mode="2026-07-28", cache=None
            ) as c,
        ):
            await c.call_tool("echo", {"warm": True})
            for _ in range(calls_per_client):
                t = time.perf_counter()
                r = await c.call_tool("echo", {"tag": uuid.uuid4().hex})
                lat.append((time.perf_counter() - t) * 1000)
                assert not r.is_error, r

    t = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(16):
            tg.start_soon(one)
    return lat, time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--calls", type=int, default=25, help="calls per client through the LB")
    ap.add_argument("--skip-lb", action="store_true")
    args = ap.parse_args()
    if REDIS is None:
        print("redis-server is not installed (apt-get install -y redis-server)")
        return 2
    print(
        f"nproc {os.cpu_count()}; load {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}"
        f" {os.getloadavg()[2]:.2f}; Python {sys.version.split()[0]}"
    )
    with tempfile.TemporaryDirectory() as d:
        redis = RedisServer(Path(d))
        redis.start()
        try:
            per_call(redis.url, args.rounds, args.n)
            if not args.skip_lb:
                through_lb(redis, Path(d), args.calls)
        finally:
            redis.stop()
    print(f"load after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
