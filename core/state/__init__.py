"""Shared state: where rate limits, quotas, concurrency leases, breakers, the result cache and
remembered approvals live, so that replicas behind a load balancer are interchangeable.

In the invocation pipeline (guard -> result cache -> rate limits / quotas / breaker -> execute
-> cache store) every stateful step goes through the kernel's ``StateHandle``: in-process by
default (each component's own memory), or Redis with ``[state] url`` (atomic Lua scripts, keys
namespaced by deployment and tenant). An unreachable store fails closed for limits and quotas
(``STATE_UNAVAILABLE``) and falls back to local breakers, per ``[state.on_unavailable]``.
"""

from __future__ import annotations

from .handle import NODE_ENV, StateHandle, default_node_id, open_state
from .seal import Sealer, SealError
from .settings import OnUnavailable, StateSection
from .unavailable import StoreUnavailable

__all__ = [
    "NODE_ENV",
    "OnUnavailable",
    "SealError",
    "Sealer",
    "StateHandle",
    "StateSection",
    "StoreUnavailable",
    "default_node_id",
    "open_state",
]
