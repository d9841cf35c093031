"""Token buckets: ``rate`` tokens per second refill a bucket holding at most ``burst``.

A call takes one token; an empty bucket says how long until the next token. ``RateLimiter``
keeps one bucket per skill and one per tenant, created on first use from the policy's
``[rate_limits]``. Thread-safe; ``clock`` is injectable so tests never sleep.

With a shared state store (``[state] url``) both buckets live there and are taken in one atomic
round trip (all or nothing, so nothing needs refunding); while the store is down the limiter
refuses (``STATE_UNAVAILABLE``) or uses these local buckets, as ``[state.on_unavailable]
rate_limits`` says.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, final

if TYPE_CHECKING:
    from .state.handle import StateHandle

__all__ = ["RateLimiter", "RateSpec", "TokenBucket"]


@dataclass(frozen=True, slots=True)
class RateSpec:
    """``rate`` tokens per second, at most ``burst`` at once."""

    rate: float
    burst: int


@final
class TokenBucket:
    """A token bucket; starts full."""

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()
        self._lock = threading.Lock()
        self._retired = False

    def _refill(self) -> float:
        now = self._clock()
        if now > self._stamp:
            self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
        return now

    def try_acquire(self) -> float:
        """Take a token: 0.0 if taken, else the seconds until one will be available."""
        with self._lock:
            return self._take()

    def _take(self) -> float:
        """``try_acquire`` under the lock; -1.0 if the bucket was retired (fetch it again)."""
        if self._retired:
            return -1.0
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate

    def take_or_retired(self) -> float:
        """Like ``try_acquire``, but -1.0 if a limiter retired this bucket meanwhile."""
        with self._lock:
            return self._take()

    def retire_if_full(self) -> bool:
        """Retire the bucket if it has refilled completely (then it is the same as a new one)."""
        with self._lock:
            self._refill()
            if self._tokens >= self.burst:
                self._retired = True
            return self._retired

    def refund(self) -> None:
        """Give a token back (the call it was taken for did not go ahead)."""
        with self._lock:
            self._tokens = min(float(self.burst), self._tokens + 1.0)

    @property
    def tokens(self) -> float:
        """Tokens available now (fractional while refilling)."""
        with self._lock:
            self._refill()
            return self._tokens


@final
class RateLimiter:
    """Buckets per skill (``skills`` or ``default``) and per tenant (``tenants`` or
    ``tenant_default``); a key with no spec is unlimited."""

    def __init__(
        self,
        *,
        default: RateSpec | None = None,
        skills: Mapping[str, RateSpec] | None = None,
        tenant_default: RateSpec | None = None,
        tenants: Mapping[str, RateSpec] | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_buckets: int = 10_000,
        state: StateHandle | None = None,
    ) -> None:
        """``max_buckets`` bounds memory when callers send many tenant names: past it, buckets
        that have refilled completely are dropped (a full bucket is the same as a new one, so
        this changes no decision)."""
        self._max_buckets = max_buckets
        self._sweep_at = max_buckets
        self._default = default
        self._skills = dict(skills or {})
        self._tenant_default = tenant_default
        self._tenants = dict(tenants or {})
        self._clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket | None] = {}
        self._lock = threading.Lock()
        self._state = state if state is not None and state.store is not None else None

    def _spec(self, kind: str, name: str) -> RateSpec | None:
        if kind == "skill":
            return self._skills.get(name, self._default)
        return self._tenants.get(name, self._tenant_default)

    def _shared(self, skill: str, tenant: str) -> list[tuple[str, str, float, int]]:
        """``(which, key, rate, burst)`` of the buckets that apply, for the shared store."""
        assert self._state is not None and self._state.store is not None
        store = self._state.store
        out = []
        for which, name in (("skill", skill), ("tenant", tenant)):
            spec = self._spec(which, name)
            if spec is not None:
                key = (
                    store.skill_key(name, "bucket")
                    if which == "skill"
                    else store.tenant_key(name, "bucket")
                )
                out.append((which, key, spec.rate, spec.burst))
        return out

    def _bucket(self, kind: str, name: str) -> TokenBucket | None:
        key = (kind, name)
        try:
            return self._buckets[key]
        except KeyError:
            pass
        if kind == "skill":
            spec = self._skills.get(name, self._default)
        else:
            spec = self._tenants.get(name, self._tenant_default)
        with self._lock:
            if key not in self._buckets:
                if len(self._buckets) >= self._max_buckets:
                    self._buckets = {
                        k: b
                        for k, b in self._buckets.items()
                        if b is not None and b.tokens < b.burst
                    }
                self._buckets[key] = (
                    None if spec is None else TokenBucket(spec.rate, spec.burst, clock=self._clock)
                )
            return self._buckets[key]

    def acquire(self, skill: str, tenant: str) -> tuple[str, float] | None:
        """Take a token from the skill's and the tenant's bucket.

        Returns None when both allowed the call, else ``(which, retry_after_s)`` with ``which``
        ``"skill"`` or ``"tenant"``; a token already taken is given back. With a shared store
        that is down and fails closed, raises ``ExecutionError(STATE_UNAVAILABLE)``.
        """
        if self._state is not None:
            from .state.unavailable import StoreUnavailable

            assert self._state.store is not None
            buckets = self._shared(skill, tenant)
            if not buckets:
                return None
            try:
                hit = self._state.store.take([(k, r, b) for _, k, r, b in buckets])
            except StoreUnavailable as exc:
                if self._state.fallback("rate_limits") != "local":
                    raise self._state.refuse("rate_limits", exc) from None
            else:
                return None if hit is None else (buckets[hit[0]][0], hit[1])
        sb, wait = self._take("skill", skill)
        if wait > 0:
            return ("skill", wait)
        _, wait = self._take("tenant", tenant)
        if wait > 0:
            if sb is not None:
                sb.refund()
            return ("tenant", wait)
        return None

    def _take(self, kind: str, name: str) -> tuple[TokenBucket | None, float]:
        """Take a token from the current bucket for ``(kind, name)``; a bucket retired by a
        concurrent sweep is fetched again, so no token is ever taken from a forgotten one."""
        while True:
            bucket = self._bucket(kind, name)
            if bucket is None:
                return None, 0.0
            wait = bucket.take_or_retired()
            if wait >= 0:
                return bucket, wait

    def refund(self, skill: str, tenant: str) -> None:
        """Give back the tokens ``acquire`` took (a later check refused the call)."""
        if self._state is not None:
            from .state.unavailable import StoreUnavailable

            assert self._state.store is not None
            buckets = self._shared(skill, tenant)
            try:
                if buckets:
                    self._state.store.refund([(k, r, b) for _, k, r, b in buckets])
                return
            except StoreUnavailable:
                pass  # taken locally (fallback) or lost with the store: refund locally
        for b in (self._bucket("skill", skill), self._bucket("tenant", tenant)):
            if b is not None:
                b.refund()
