"""Tenants and roles: which skills a caller may use, and per-tenant quotas.

``[tenants.NAME]`` (or ``[tenants."*"]`` for any tenant without its own section) may list the
skills the tenant may call and set ``invocations_per_day`` (the day ends at UTC midnight) and
``max_concurrent``. ``[roles.NAME] skills`` lists what a caller holding that role may call: a
caller holding one or more configured roles needs at least one of them to allow the skill;
roles without a section restrict nothing. Tenant and role rules must both allow a call.

With a shared state store the daily count and the running calls live there (one atomic script
per admission; a running call is a lease that this process renews and that expires if the
process dies); while the store is down, admission refuses (``STATE_UNAVAILABLE``) or counts
locally, as ``[state.on_unavailable] quotas`` says.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, final

from .policy import RoleSection, TenantSection

if TYPE_CHECKING:
    from .state.handle import StateHandle

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
        state: StateHandle | None = None,
    ) -> None:
        self._state = state if state is not None and state.store is not None else None
        self._leases: dict[tuple[str, str], tuple[str, bool]] = {}
        """(tenant, call id) -> (shared lease id, counted today) for shared admissions."""
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

    def admit(self, tenant: str, call: str = "") -> QuotaRefusal | None:
        """Count one invocation and one running call, or say which quota refuses it.

        On None the caller must call ``release(tenant, call)`` when the invocation ends;
        ``call`` (the invocation id) names the concurrency lease in a shared store.
        """
        found = self._section(tenant)
        if found is None:
            return None
        where, sec = found
        if sec.invocations_per_day is None and sec.max_concurrent is None:
            return None
        if self._state is not None:
            from .state.unavailable import StoreUnavailable

            try:
                return self._admit_shared(tenant, call, where, sec)
            except StoreUnavailable as exc:
                if self._state.fallback("quotas") != "local":
                    raise self._state.refuse("quotas", exc) from None
        return self._admit_local(tenant, where, sec)

    def _admit_shared(
        self, tenant: str, call: str, where: str, sec: TenantSection
    ) -> QuotaRefusal | None:
        assert self._state is not None and self._state.store is not None
        store = self._state.store
        lease = store.new_lease_id(call)
        code, wait, n = store.admit(tenant, sec.invocations_per_day, sec.max_concurrent, lease)
        if code == 1:
            return QuotaRefusal(
                f"{where} invocations_per_day",
                f"tenant {tenant!r} used its {sec.invocations_per_day} invocations for today (UTC)",
                wait,
            )
        if code == 2:
            return QuotaRefusal(
                f"{where} max_concurrent",
                f"tenant {tenant!r} already runs {n} calls (max_concurrent {sec.max_concurrent})",
                wait,
            )
        with self._lock:
            self._leases[(tenant, call)] = (lease, sec.invocations_per_day is not None)
        return None

    def _admit_local(self, tenant: str, where: str, sec: TenantSection) -> QuotaRefusal | None:
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

    def _shared_end(self, tenant: str, call: str, undo: bool) -> bool:
        """End a shared admission; False if ``call`` was admitted locally (or not at all)."""
        with self._lock:
            held = self._leases.pop((tenant, call), None)
        if held is None or self._state is None or self._state.store is None:
            return False
        from .state.unavailable import StoreUnavailable

        lease, counted = held
        try:
            if undo:
                self._state.store.unadmit(tenant, lease, counted=counted)
            else:
                self._state.store.release(tenant, lease)
        except StoreUnavailable:
            pass  # the lease expires by itself (lease_ttl_s); the count stays (fails closed)
        return True

    def release(self, tenant: str, call: str = "") -> None:
        """One admitted call ended."""
        if self._state is not None and self._shared_end(tenant, call, undo=False):
            return
        self._release_local(tenant)

    def _release_local(self, tenant: str) -> None:
        with self._lock:
            n = self._running.get(tenant, 0)
            if n <= 1:
                self._running.pop(tenant, None)
            else:
                self._running[tenant] = n - 1

    def unadmit(self, tenant: str, call: str = "") -> None:
        """An admitted call did not run after all: release it and uncount it for today."""
        if self._state is not None and self._shared_end(tenant, call, undo=True):
            return
        with self._lock:
            day, count = self._day.get(tenant, (0, 0))
            if count > 0:
                self._day[tenant] = (day, count - 1)
        self._release_local(tenant)

    def running(self, tenant: str) -> int:
        """Calls of ``tenant`` running now (across replicas with a shared store)."""
        if self._state is not None and self._state.store is not None:
            from .state.unavailable import StoreUnavailable

            try:
                return self._state.store.running(tenant)
            except StoreUnavailable:
                pass
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
