"""One kernel's view of its state backend: the store (or none), seal keys, node id, fallbacks.

``open_state`` reads ``[state]``: without ``url`` the backend is in-process (``store`` is None
and each component keeps its own memory, today's behaviour); with one it is a ``RedisStore``.
``refuse`` turns an outage into the ``STATE_UNAVAILABLE`` error a call gets when its kind of
state fails closed, and counts it for ``health()``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, final

from ..closing import Closeable
from ..errors import ErrorCode, ExecutionError
from .seal import Sealer, sealer_from_env
from .settings import StateSection
from .unavailable import StoreUnavailable

if TYPE_CHECKING:
    from .redisstore import RedisStore

__all__ = [
    "NODE_ENV",
    "StateHandle",
    "check_state",
    "default_node_id",
    "describe_status",
    "open_state",
]

NODE_ENV = "BASTION_NODE_ID"


def default_node_id(environ: Mapping[str, str]) -> str:
    """``$BASTION_NODE_ID``, else ``<hostname>-<pid>`` (unique per process on one host)."""
    return environ.get(NODE_ENV) or f"{socket.gethostname()}-{os.getpid()}"


@final
@dataclass(eq=False)
class StateHandle(Closeable):
    """The backend a kernel's limits, quotas, breakers, cache and approvals go through."""

    section: StateSection
    node_id: str
    sealer: Sealer
    store: RedisStore | None = None
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Where credentials are read from (the kernel's environment)."""

    @property
    def backend(self) -> str:
        return "memory" if self.store is None else "redis"

    def fallback(self, kind: str) -> str:
        """``closed`` or ``local`` for ``rate_limits``, ``quotas`` or ``breakers``."""
        return str(getattr(self.section.on_unavailable, kind))

    def refuse(self, kind: str, exc: StoreUnavailable) -> ExecutionError:
        """The error a call gets when ``kind`` fails closed (its detail keeps the reason)."""
        if self.store is not None:
            self.store.count_refusal(kind)
        retry = max(self.section.retry_s, 0.1)
        return ExecutionError(
            ErrorCode.STATE_UNAVAILABLE,
            f"the shared state store holding {kind.replace('_', ' ')} is unavailable "
            f"({exc.public}); retry in {retry:.1f} s",
            detail=exc.reason,
            retry_after_s=retry,
        )

    def status(self) -> dict[str, Any]:
        if self.store is None:
            out: dict[str, Any] = {"backend": "memory", "available": True, "node_id": self.node_id}
        else:
            out = self.store.status()
        out["seal_keys"] = "shared" if self.sealer.shared else "per-process"
        return out

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def check_state(
    section: StateSection, environ: Mapping[str, str], *, source: str | None = None
) -> None:
    """Raise ``ConfigError`` if ``open_state`` would (a named credential or seal key is not
    set or too short), without connecting: a policy reload checks this before it swaps."""
    sealer_from_env(section.seal_keys_env, environ, source=source)
    from ..errors import ConfigError

    for field_name, env in (
        ("username", section.username_env),
        ("password", section.password_env),
    ):
        if section.url is not None and env is not None and not environ.get(env):
            raise ConfigError(
                f"[state] {field_name}_env names {env!r}, which is not set",
                source=source,
                where=f"state.{field_name}_env",
                fix=f"export {env}=... before starting, or remove {field_name}_env",
            )


def open_state(
    section: StateSection, environ: Mapping[str, str], *, source: str | None = None
) -> StateHandle:
    """The state backend ``section`` describes; raises ``ConfigError`` for a missing
    credential or seal key (the store itself may be down: that is not a start-up error)."""
    node = section.node_id or default_node_id(environ)
    sealer = sealer_from_env(section.seal_keys_env, environ, source=source)
    if section.url is None:
        return StateHandle(section, node, sealer, environ=environ)
    from .redisstore import RedisStore  # imported only when configured (CLI start-up time)

    return StateHandle(
        section,
        node,
        sealer,
        RedisStore(section, environ=environ, node_id=node, source=source),
        environ,
    )


def describe_status(st: Mapping[str, Any]) -> str:
    """One line for ``bastion doctor`` from ``StateHandle.status()``."""
    if st.get("backend") != "redis":
        return f"in-process (node {st.get('node_id')})"
    head = f"redis {st.get('url')} namespace {st.get('namespace')!r}, node {st.get('node_id')}"
    refusals = st.get("refusals") or {}
    tail = f", {sum(refusals.values())} refusals" if refusals else ""
    keys = f", seal keys {st.get('seal_keys')}"
    if st.get("available"):
        return head + keys + tail
    return f"{head}: UNAVAILABLE ({st.get('reason')}){tail}"
