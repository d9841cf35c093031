"""The policy's ``[state]`` section: where shared state lives and what happens without it.

Absent (or without ``url``): every limit, quota, breaker, cache entry and approval lives in this
process (the default for the CLI and embedding). With ``url = "redis://host:port/db"`` (or
``rediss://`` for TLS) they live in Redis, shared by every replica of one ``namespace``.
Credentials never appear in the file: ``username_env`` and ``password_env`` name environment
variables, like ``[secrets]``.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["OnUnavailable", "StateSection"]

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_NAMESPACE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class _Model(BaseModel):
    """A ``[state]`` section; built at first validation, like the policy's (bastion.policy)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


Fallback = Literal["closed", "local"]


class OnUnavailable(_Model):
    """``[state.on_unavailable]``: per kind of state, what a call gets while the store is down.

    ``closed`` refuses the call with ``STATE_UNAVAILABLE`` (retryable); ``local`` uses this
    process's own in-memory state until the store answers again (limits then hold per node).
    """

    rate_limits: Fallback = "closed"
    quotas: Fallback = "closed"
    breakers: Fallback = "local"


class StateSection(_Model):
    """``[state]``: the shared store of limits, quotas, breakers, cache and approvals."""

    url: str | None = None
    """``redis://host[:port][/db]`` or ``rediss://...``; absent: in-process state."""
    username_env: str | None = None
    password_env: str | None = None
    namespace: Annotated[str, Field(min_length=1, max_length=64)] = "bastion"
    """The deployment: replicas sharing a namespace share every limit; others share none."""
    node_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    """This replica's name in audit records (default: ``$BASTION_NODE_ID``, else host/pid)."""
    seal_keys_env: tuple[str, ...] = ()
    """Environment variables holding the keys that seal approvals and request state; the first
    seals, every one opens (rotation). Replicas must share them; absent: a per-process key."""
    timeout_ms: Annotated[int, Field(ge=1, le=60_000)] = 250
    """Connect and read timeout of one store operation."""
    retry_s: Annotated[float, Field(ge=0, le=3600)] = 1.0
    """After a failure, how long calls use the fallback before the store is tried again."""
    lease_ttl_s: Annotated[float, Field(ge=1, le=3600)] = 10.0
    """A concurrency slot held by a replica that stopped renewing it frees itself after this."""
    approval_ttl_s: Annotated[float, Field(gt=0, le=30 * 86_400)] = 86_400.0
    """How long a granted approval is remembered in the store."""
    on_unavailable: OnUnavailable = OnUnavailable.model_construct()

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            parts = urlsplit(v)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as exc:
            raise ValueError(f"{v!r} is not a valid URL ({exc})") from None
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(
                f"{v!r} is not a Redis URL; write redis://host:6379/0 (or rediss:// for TLS)"
            )
        if not parts.hostname:
            raise ValueError(f"{v!r} names no host; write redis://host:6379/0")
        if parts.password is not None or parts.username:
            raise ValueError(
                "the [state] url must not carry credentials; put the password in an "
                "environment variable and name it with password_env (and username_env)"
            )
        db = parts.path.lstrip("/")
        if db and not db.isdigit():
            raise ValueError(f"{v!r}: the database must be a number, e.g. redis://host:6379/0")
        return v

    @field_validator("username_env", "password_env")
    @classmethod
    def _env(cls, v: str | None) -> str | None:
        if v is not None and not _ENV_NAME.match(v):
            raise ValueError(f"{v!r} is not an environment variable name")
        return v

    @field_validator("seal_keys_env")
    @classmethod
    def _envs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            if not _ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return v

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        if not _NAMESPACE.match(v):
            raise ValueError(f"namespace {v!r} may hold only letters, digits, '_', '.' and '-'")
        return v
