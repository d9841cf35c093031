"""Tool-list changes fanned out across replicas through the store's pub/sub.

A replica whose tools changed (policy or packs re-read) publishes ``<namespace>:x:tools`` with
its node id; every other replica of the namespace hears it and runs its ``on_change`` (for
``bastion serve``: reload from disk and tell its own clients). The listener is an asyncio task
on the ``redis`` asyncio client that reconnects by itself while the store is down; a message
lost during an outage only delays a replica until its own file watcher sees the change.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, final

from ..logs import get_logger
from .settings import StateSection

__all__ = ["ToolsFanout"]

log = get_logger("bastion.state")

CHANNEL = "tools"


@final
class ToolsFanout:
    """``publish()`` after a local change; ``run(on_change)`` listens until cancelled."""

    def __init__(self, section: StateSection, node_id: str, environ: Mapping[str, str]) -> None:
        import redis.asyncio as aioredis

        assert section.url is not None
        creds: dict[str, Any] = {}
        if section.username_env:
            creds["username"] = environ.get(section.username_env)
        if section.password_env:
            creds["password"] = environ.get(section.password_env)
        timeout = section.timeout_ms / 1000
        self.node_id = node_id
        self.channel = f"{section.namespace}:x:{CHANNEL}"
        self._retry_s = max(section.retry_s, 0.1)
        self._client = aioredis.Redis.from_url(
            section.url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            decode_responses=True,
            **creds,
        )
        self.heard = 0
        """Changes heard from other replicas (for health and tests)."""

    async def publish(self) -> bool:
        """Tell the other replicas; False (logged) when the store is down."""
        msg = json.dumps({"node": self.node_id})
        try:
            await self._client.publish(self.channel, msg)
        except Exception as exc:
            log.warning("tools_fanout_publish_failed", reason=f"{type(exc).__name__}: {exc}")
            return False
        return True

    async def run(
        self,
        on_change: Callable[[str], Awaitable[None]],
        ready: asyncio.Event | None = None,
    ) -> None:
        """Listen (reconnecting) until cancelled; ``on_change(node)`` for each other node's
        message; ``ready`` is set each time the subscription is in place."""
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                if ready is not None:
                    ready.set()
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is None:
                        continue
                    node = self._node_of(msg.get("data"))
                    if node is None or node == self.node_id:
                        continue
                    self.heard += 1
                    try:
                        await on_change(node)
                    except Exception:
                        log.exception("tools_fanout_handler_failed", node=node)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if ready is not None:
                    ready.clear()
                log.warning("tools_fanout_disconnected", reason=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(self._retry_s)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    @staticmethod
    def _node_of(data: Any) -> str | None:
        if not isinstance(data, str) or len(data) > 1024:
            return None
        try:
            doc = json.loads(data)
        except ValueError:
            return None
        node = doc.get("node") if isinstance(doc, dict) else None
        return node if isinstance(node, str) else None

    async def aclose(self) -> None:
        await self._client.aclose()
