"""One call's admission against the shared store in one round trip, and its end in another.

Pipeline step ``rate limits / quotas / breaker`` with ``[state] url``: instead of a round trip
per check (skill and tenant buckets, daily count and lease, breaker: three, then two more to
release and record), the kernel asks ``SharedAdmission.admit`` once, which runs every check and
takes everything only if all pass, and ``finish`` once. While the store is down ``admit``
returns ``FALLBACK`` and the kernel takes the per-component path, where each kind of state
applies its ``[state.on_unavailable]`` choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, final

from ..errors import ErrorCode
from ..logs import get_logger
from .unavailable import StoreUnavailable

if TYPE_CHECKING:
    from ..breaker import Breaker
    from ..ratelimit import RateLimiter
    from ..tenants import TenantGate
    from .handle import StateHandle

__all__ = ["FALLBACK", "Refusal", "SharedAdmission", "Ticket"]

log = get_logger("bastion.state")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the call may not run now: the code, the message, the wait and the rule."""

    code: ErrorCode
    message: str
    retry_after_s: float
    rule: str


@dataclass(frozen=True, slots=True)
class Ticket:
    """What an admitted call holds: its lease (if any) and whether a breaker watches it."""

    tenant: str
    skill: str
    lease: str | None
    breaker: bool
    probe: bool = False
    """This call is the breaker's single half-open probe."""


class _Fallback:
    """The store did not answer: use the per-component path."""


FALLBACK: Final = _Fallback()


@final
class SharedAdmission:
    """Admission and end of calls for a kernel whose state lives in Redis."""

    def __init__(
        self,
        state: StateHandle,
        limiter: RateLimiter | None,
        tenants: TenantGate | None,
        breakers: dict[str, Breaker],
    ) -> None:
        assert state.store is not None
        self._store = state.store
        self._limiter = limiter
        self._tenants = tenants
        self._breakers = breakers

    def admit(self, skill: str, tenant: str, call: str) -> Ticket | Refusal | _Fallback:
        buckets = [] if self._limiter is None else self._limiter._shared(skill, tenant)
        per_day = max_conc = None
        where = ""
        found = None if self._tenants is None else self._tenants._section(tenant)
        if found is not None:
            where, sec = found
            per_day, max_conc = sec.invocations_per_day, sec.max_concurrent
        br = self._breakers.get(skill)
        breaker = None
        if br is not None:
            breaker = (skill, br.cooldown_s, getattr(br, "probe_ttl_s", 60.0))
        if not buckets and per_day is None and max_conc is None and breaker is None:
            return Ticket(tenant, skill, None, False)
        lease = self._store.new_lease_id(call)
        try:
            stage, code, wait, n = self._store.admit_call(
                [(k, r, b) for _, k, r, b in buckets], tenant, per_day, max_conc, lease, breaker
            )
        except StoreUnavailable:
            return FALLBACK
        if stage == 0:
            held = lease if max_conc is not None else None
            return Ticket(tenant, skill, held, breaker is not None, probe=code == 2)
        if stage == 1:
            which = buckets[code - 1][0]
            rule = (
                f"[rate_limits] for skill {skill!r}"
                if which == "skill"
                else f"[rate_limits] for tenant {tenant!r}"
            )
            return Refusal(
                ErrorCode.RATE_LIMITED,
                f"rate limit reached ({rule}); retry in {wait:.2f} s",
                round(wait, 3),
                rule,
            )
        if stage == 2:
            if code == 1:
                rule = f"{where} invocations_per_day"
                text = f"tenant {tenant!r} used its {per_day} invocations for today (UTC)"
            else:
                rule = f"{where} max_concurrent"
                text = f"tenant {tenant!r} already runs {n} calls (max_concurrent {max_conc})"
            return Refusal(
                ErrorCode.RATE_LIMITED, f"{text}; retry in {wait:.0f} s", round(wait, 3), rule
            )
        return Refusal(
            ErrorCode.CIRCUIT_OPEN,
            f"skill {skill!r} is paused after repeated failures; retry in {wait:.1f} s",
            round(wait, 3),
            "[breaker]",
        )

    def finish(self, ticket: Ticket, failed: bool | None) -> None:
        """Free the lease and give the breaker its verdict (``failed`` None: no verdict, as
        for ``NOT_READY`` or ``CANCELLED``: a probe is handed back, nothing is counted)."""
        br = self._breakers.get(ticket.skill) if ticket.breaker else None
        if br is None:
            verdict = "none"
        elif failed is None:
            verdict = "release" if ticket.probe else "none"
        else:
            verdict = "fail" if failed else "ok"
        if ticket.lease is None and verdict == "none":
            return
        threshold = br.threshold if br is not None else 1
        window = br.window_s if br is not None else None
        try:
            self._store.finish_call(
                ticket.tenant, ticket.lease, ticket.skill, verdict, threshold, window
            )
        except StoreUnavailable:
            # The lease frees itself (lease_ttl_s); the verdict goes to the local breaker.
            if br is not None and verdict in ("ok", "fail"):
                local = getattr(br, "local", br)
                (local.record_failure if verdict == "fail" else local.record_success)()
