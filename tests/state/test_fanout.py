"""Tool-list change fan-out over a real Redis pub/sub: heard by the other replicas, not by the
sender, and the listener reconnects by itself after the store restarts."""

from __future__ import annotations

import asyncio

from bastion.state import StateSection
from bastion.state.fanout import ToolsFanout
from tests.state.redisserver import RedisServer


def test_changes_reach_other_replicas_and_survive_a_restart(redis_server: RedisServer) -> None:
    sec = StateSection(url=redis_server.url, namespace="fan", retry_s=0.1, timeout_ms=300)

    async def body() -> None:
        a, b, c = (ToolsFanout(sec, n, {}) for n in ("a", "b", "c"))
        heard: dict[str, list[str]] = {"a": [], "b": [], "c": []}
        readies = {n: asyncio.Event() for n in heard}

        def handler(me: str) -> object:
            async def on(node: str) -> None:
                heard[me].append(node)

            return on

        tasks = [
            asyncio.ensure_future(f.run(handler(n), readies[n]))  # type: ignore[arg-type]
            for n, f in (("a", a), ("b", b), ("c", c))
        ]
        try:
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in readies.values())), 10)
            assert await a.publish()
            await _until(lambda: heard["b"] == ["a"] and heard["c"] == ["a"])
            assert heard["a"] == [], "a replica does not react to its own change"
            await asyncio.to_thread(redis_server.stop)
            assert not await b.publish(), "publishing while the store is down says so"
            await asyncio.to_thread(redis_server.start)
            await asyncio.wait_for(asyncio.gather(*(_resubscribed(readies[n]) for n in heard)), 15)
            assert await b.publish()
            await _until(lambda: heard["a"] == ["b"] and heard["c"] == ["a", "b"])
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for f in (a, b, c):
                await f.aclose()

    asyncio.run(body())


async def _until(check: object, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():  # type: ignore[operator]
        assert loop.time() < end, "not heard in time"
        await asyncio.sleep(0.05)


async def _resubscribed(ready: asyncio.Event) -> None:
    # ``ready`` is cleared when the listener saw the connection drop, set again on resubscribe.
    while ready.is_set():
        await asyncio.sleep(0.05)
    await ready.wait()
