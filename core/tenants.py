"""Tenants and roles: which skills a caller may use, and per-tenant quotas.

``[tenants.NAME]`` (or ``[tenants."*"]`` for any tenant without its own section) may list the
skills the tenant may call and set ``invocations_per_day`` (the day ends at UTC midnight) and
``max_concurrent``. ``[roles.NAME] skills`` lists what a caller holding that role may call: a
caller holding one or more configured roles needs at least one of them to allow the skill;
roles without a section restrict nothing. Tenant and role rules must both allow a call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import final

from .policy import RoleSection, TenantSection

__all__ = ["QuotaRefusal", "TenantGate", "matches_any"]

_DAY_S = 86_400


def matches_any(name: str, patterns: Sequence[str]) -> bool:
    """Whether ``name`` equals or fnmatch-matches (case-sensitive) one of ``patterns``."""
    return any(p == "*" or p == name or fnmatchcase(name, p) for p in patterns)


@dataclass(frozen=True, slots=True)
class QuotaRefusal:
    """Why a tenant quota refused a call, and when trying again may work."""

    rule: str
    message: str
    retry_after_s: float


@final
class TenantGate:
    """Allow-lists per tenant and role, daily counts and concurrency per tenant; thread-safe.

    ``wall_clock`` (seconds since the epoch, default ``time.time``) decides the UTC day.
    """

    def __init__(
        self,
        tenants: Mapping[str, TenantSection],
        roles: Mapping[str, RoleSection],
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._tenants = dict(tenants)
        self._roles = dict(roles)
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._day: dict[str, tuple[int, int]] = {}
        self._swept = -1
        """tenant -> (UTC day number, invocations counted that day)."""
        self._running: dict[str, int] = {}

    def _section(self, tenant: str) -> tuple[str, TenantSection] | None:
        sec = self._tenants.get(tenant)
        if sec is not None:
            return f"[tenants.{tenant}]", sec
        sec = self._tenants.get("*")
        if sec is not None:
            return '[tenants."*"]', sec
        return None

    def refusal(self, skill: str, tenant: str, roles: Sequence[str]) -> str | None:
        """None if the tenant and the caller's roles allow ``skill``, else the reason."""
        found = self._section(tenant)
        if found is not None:
            where, sec = found
            if sec.skills is not None and not matches_any(skill, sec.skills):
                return f"skill {skill!r} is not allowed for tenant {tenant!r} by {where} skills"
        held = [r for r in roles if r in self._roles]
        if held and not any(matches_any(skill, self._roles[r].skills) for r in held):
            names = ", ".join(f"[roles.{r}]" for r in held)
            return f"skill {skill!r} is not allowed for the caller's roles by {names} skills"
        return None

    def admit(self, tenant: str) -> QuotaRefusal | None:
        """Count one invocation and one running call, or say which quota refuses it.

        On None the caller must call ``release(tenant)`` when the invocation ends.
        """
        found = self._section(tenant)
        if found is None:
            return None
        where, sec = found
        if sec.invocations_per_day is None and sec.max_concurrent is None:
            return None
        now = self._wall()
        today = int(now // _DAY_S)
        with self._lock:
            if today != self._swept:
                # A new UTC day: yesterday's counts are over; forget them (bounded memory).
                self._day = {t: v for t, v in self._day.items() if v[0] == today}
                self._swept = today
            day, count = self._day.get(tenant, (today, 0))
            if day != today:
                count = 0
            if sec.invocations_per_day is not None and count >= sec.invocations_per_day:
                return QuotaRefusal(
                    f"{where} invocations_per_day",
                    f"tenant {tenant!r} used its {sec.invocations_per_day} invocations for "
                    "today (UTC)",
                    (today + 1) * _DAY_S - now,
                )
            running = self._running.get(tenant, 0)
            if sec.max_concurrent is not None and running >= sec.max_concurrent:
                return QuotaRefusal(
                    f"{where} max_concurrent",
                    f"tenant {tenant!r} already runs {running} calls (max_concurrent "
                    f"{sec.max_concurrent})",
                    1.0,
                )
            self._day[tenant] = (today, count + 1)
            self._running[tenant] = running + 1
        return None

    def release(self, tenant: str) -> None:
        """One admitted call ended."""
        with self._lock:
            n = self._running.get(tenant, 0)
            if n <= 1:
                self._running.pop(tenant, None)
            else:
                self._running[tenant] = n - 1

    def unadmit(self, tenant: str) -> None:
        """An admitted call did not run after all: release it and uncount it for today."""
        with self._lock:
            day, count = self._day.get(tenant, (0, 0))
            if count > 0:
                self._day[tenant] = (day, count - 1)
        self.release(tenant)

    def running(self, tenant: str) -> int:
        with self._lock:
            return self._running.get(tenant, 0)

    @property
    def has_quotas(self) -> bool:
        return any(
            s.invocations_per_day is not None or s.max_concurrent is not None
            for s in self._tenants.values()
        )

    @property
    def has_rules(self) -> bool:
        return bool(self._roles) or any(s.skills is not None for s in self._tenants.values())
