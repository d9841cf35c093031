"""The Redis backend: every shared-state operation as one round trip, atomic by Lua script.

Keys are ``<namespace>:t:<tenant>:...`` for a tenant's state and ``<namespace>:s:<skill>:...``
for a skill's, each name percent-encoded, so no tenant or skill name can reach another's key.
A failed operation marks the store unavailable for ``retry_s`` (calls then get their kind's
fallback without waiting on a dead server); the first operation after that tries again, and a
success marks it available: recovery needs no restart. Concurrency leases held by this process
are renewed by one background thread; a replica that dies stops renewing and its leases expire.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, final
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..closing import Closeable
from ..errors import ConfigError
from ..logs import get_logger
from . import scripts
from .settings import StateSection
from .unavailable import StoreUnavailable

__all__ = ["RedisStore", "StoreUnavailable", "redacted_url"]

log = get_logger("bastion.state")

T = TypeVar("T")


def _public(exc: BaseException) -> str:
    if isinstance(exc, redis.AuthenticationError):
        return "authentication failed"
    if isinstance(exc, redis.TimeoutError):
        return "timed out"
    if isinstance(exc, redis.ConnectionError):
        return "connection refused or lost"
    if isinstance(exc, redis.ResponseError):
        return "the store refused the operation"
    return "unexpected error"


def redacted_url(url: str) -> str:
    """The URL as shown in health reports (it never holds credentials; see settings)."""
    return url


def _k(part: str) -> str:
    return quote(part, safe="")


@final
class RedisStore(Closeable):
    """Shared rate limits, quotas, leases, breakers, cache entries and approvals in Redis."""

    def __init__(
        self,
        section: StateSection,
        *,
        environ: Mapping[str, str],
        node_id: str,
        source: str | None = None,
    ) -> None:
        assert section.url is not None
        creds: dict[str, str] = {}
        for field, env in (("username", section.username_env), ("password", section.password_env)):
            if env is None:
                continue
            value = environ.get(env)
            if not value:
                raise ConfigError(
                    f"[state] {field}_env names {env!r}, which is not set",
                    source=source,
                    where=f"state.{field}_env",
                    fix=f"export {env}=... before starting, or remove {field}_env",
                )
            creds[field] = value
        timeout = section.timeout_ms / 1000
        self.url = section.url
        self.namespace = section.namespace
        self.node_id = node_id
        self.retry_s = section.retry_s
        self.lease_ttl_s = section.lease_ttl_s
        self._client = redis.Redis.from_url(
            section.url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),  # one reconnect: a pooled socket may predate a restart
            decode_responses=True,
            health_check_interval=0,
            **creds,
        )
        reg = self._client.register_script
        self._take = reg(scripts.TAKE)
        self._refund = reg(scripts.REFUND)
        self._admit = reg(scripts.ADMIT)
        self._unadmit = reg(scripts.UNADMIT)
        self._renew = reg(scripts.RENEW)
        self._b_allow = reg(scripts.BREAKER_ALLOW)
        self._b_record = reg(scripts.BREAKER_RECORD)
        self._b_state = reg(scripts.BREAKER_STATE)
        self._admit_call = reg(scripts.ADMIT_CALL)
        self._finish_call = reg(scripts.FINISH_CALL)
        self._lock = threading.Lock()
        self._available = True
        self._reason: str | None = None
        self._public = ""
        self._down_since: float | None = None
        self._retry_at = 0.0
        self.refusals: dict[str, int] = {}
        self.failures = 0
        self._leases: dict[str, str] = {}
        """lease id -> the zset key holding it (renewed while held)."""
        self._renewer: threading.Thread | None = None
        self._stop = threading.Event()
        self._seq = 0

    # -- availability ------------------------------------------------------------------------

    def _call(self, op: Callable[[], T]) -> T:
        with self._lock:
            if not self._available and time.monotonic() < self._retry_at:
                raise StoreUnavailable(self._reason or "unavailable", self._public)
        try:
            out = op()
        except redis.RedisError as exc:
            self._mark_down(exc)
            raise StoreUnavailable(
                f"{type(exc).__name__}: {str(exc)[:300]}", _public(exc)
            ) from None
        if not self._available:
            self._mark_up()
        return out

    def _mark_down(self, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {str(exc)[:300]}"
        with self._lock:
            self.failures += 1
            was = self._available
            self._available = False
            self._reason = reason
            self._public = _public(exc)
            self._retry_at = time.monotonic() + self.retry_s
            if was:
                self._down_since = time.time()
        if was:
            log.warning("state_store_unavailable", url=self.url, reason=reason)

    def _mark_up(self) -> None:
        with self._lock:
            if self._available:
                return
            self._available = True
            down = self._down_since
            self._down_since = None
        log.info(
            "state_store_recovered",
            url=self.url,
            down_s=round(time.time() - down, 3) if down else None,
        )

    def count_refusal(self, kind: str) -> None:
        with self._lock:
            self.refusals[kind] = self.refusals.get(kind, 0) + 1

    def ping(self) -> bool:
        """Try the store now (ignoring the retry pause); True when it answered."""
        with self._lock:
            self._retry_at = 0.0
        try:
            self._call(self._client.ping)
        except StoreUnavailable:
            return False
        return True

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "backend": "redis",
                "url": redacted_url(self.url),
                "namespace": self.namespace,
                "node_id": self.node_id,
                "available": self._available,
                "reason": self._reason if not self._available else None,
                "down_since": self._down_since,
                "refusals": dict(self.refusals),
                "failures": self.failures,
                "leases_held": len(self._leases),
            }

    @property
    def available(self) -> bool:
        with self._lock:
            return self._available

    # -- keys --------------------------------------------------------------------------------

    def tenant_key(self, tenant: str, *parts: str) -> str:
        return ":".join([self.namespace, "t", _k(tenant), *(_k(p) for p in parts)])

    def skill_key(self, skill: str, *parts: str) -> str:
        return ":".join([self.namespace, "s", _k(skill), *(_k(p) for p in parts)])

    def key(self, *parts: str) -> str:
        return ":".join([self.namespace, "x", *(_k(p) for p in parts)])

    # -- token buckets -----------------------------------------------------------------------

    def take(self, buckets: Sequence[tuple[str, float, int]]) -> tuple[int, float] | None:
        """Take a token from every ``(key, rate, burst)`` or from none: None when taken, else
        ``(index, seconds until that bucket has a token)``."""
        keys = [b[0] for b in buckets]
        args: list[str] = []
        for _, rate, burst in buckets:
            args += [repr(float(rate)), str(int(burst))]
        idx, wait = self._call(lambda: self._take(keys=keys, args=args))
        if int(idx) == 0:
            return None
        return int(idx) - 1, float(wait)

    def refund(self, buckets: Sequence[tuple[str, float, int]]) -> None:
        keys = [b[0] for b in buckets]
        args: list[str] = []
        for _, rate, burst in buckets:
            args += [repr(float(rate)), str(int(burst))]
        self._call(lambda: self._refund(keys=keys, args=args))

    # -- quotas and leases -------------------------------------------------------------------

    def new_lease_id(self, hint: str) -> str:
        with self._lock:
            self._seq += 1
            return f"{self.node_id}/{hint}/{self._seq}"

    def admit(
        self, tenant: str, per_day: int | None, max_concurrent: int | None, lease: str
    ) -> tuple[int, float, int]:
        """``(0, 0, count)`` admitted (the lease is held and renewed until ``release``),
        ``(1, wait, count)`` the day is used up, ``(2, wait, running)`` no slot is free."""
        day, leases = self.tenant_key(tenant, "day"), self.tenant_key(tenant, "leases")
        args = [
            str(-1 if per_day is None else per_day),
            str(-1 if max_concurrent is None else max_concurrent),
            lease,
            repr(float(self.lease_ttl_s)),
        ]
        code, wait, n = self._call(lambda: self._admit(keys=[day, leases], args=args))
        if int(code) == 0 and max_concurrent is not None:
            self._hold(lease, leases)
        return int(code), float(wait), int(n)

    def release(self, tenant: str, lease: str) -> None:
        leases = self.tenant_key(tenant, "leases")
        with self._lock:
            self._leases.pop(lease, None)
        self._call(lambda: self._client.zrem(leases, lease))

    def unadmit(self, tenant: str, lease: str, *, counted: bool) -> None:
        day, leases = self.tenant_key(tenant, "day"), self.tenant_key(tenant, "leases")
        with self._lock:
            self._leases.pop(lease, None)
        self._call(lambda: self._unadmit(keys=[day, leases], args=[lease, "1" if counted else "0"]))

    def running(self, tenant: str) -> int:
        leases = self.tenant_key(tenant, "leases")

        def op() -> int:
            sec, usec = self._client.time()
            return int(self._client.zcount(leases, f"({int(sec) + int(usec) / 1e6!r}", "+inf"))

        return self._call(op)

    def day_count(self, tenant: str) -> int:
        """Invocations counted today (UTC, the server's clock) for ``tenant``."""
        day = self.tenant_key(tenant, "day")
        got = self._call(lambda: self._client.hmget(day, ["day", "n"]))
        t = self._call(self._client.time)
        today = int(t[0]) // 86_400
        return int(got[1] or 0) if got[0] is not None and int(got[0]) == today else 0

    def _hold(self, lease: str, key: str) -> None:
        with self._lock:
            self._leases[lease] = key
            if self._renewer is None or not self._renewer.is_alive():
                self._stop.clear()
                self._renewer = threading.Thread(
                    target=self._renew_loop, name="bastion-state-leases", daemon=True
                )
                self._renewer.start()

    def _renew_loop(self) -> None:
        interval = max(0.2, self.lease_ttl_s / 3)
        while not self._stop.wait(interval):
            with self._lock:
                held = list(self._leases.items())
            if not held:
                continue
            keys = [k for _, k in held]
            args = [lease for lease, _ in held] + [repr(float(self.lease_ttl_s))]
            try:
                self._call(lambda k=keys, a=args: self._renew(keys=k, args=a))  # type: ignore[misc]
            except StoreUnavailable:
                continue  # the leases may expire meanwhile; the store decides, not this node

    # -- one call's admission and end, one round trip each -------------------------------------

    def admit_call(
        self,
        buckets: Sequence[tuple[str, float, int]],
        tenant: str,
        per_day: int | None,
        max_concurrent: int | None,
        lease: str,
        breaker: tuple[str, float, float] | None,
    ) -> tuple[int, int, float, int]:
        """Buckets, quota and breaker checked and taken at once (nothing taken on refusal).

        ``(0, 1|2, 0, n)`` admitted (2: this call is the breaker's half-open probe),
        ``(1, bucket index, wait, 0)``, ``(2, 1 day | 2 slots, wait, n)``, ``(3, 0, wait, 0)``.
        ``breaker`` is ``(skill, cooldown_s, probe_ttl_s)`` or None."""
        day, leases = self.tenant_key(tenant, "day"), self.tenant_key(tenant, "leases")
        bkey = self.skill_key(breaker[0], "breaker") if breaker else self.key("none")
        args: list[str] = [str(len(buckets))]
        for _, rate, burst in buckets:
            args += [repr(float(rate)), str(int(burst))]
        args += [
            str(-1 if per_day is None else per_day),
            str(-1 if max_concurrent is None else max_concurrent),
            lease,
            repr(float(self.lease_ttl_s)),
            "1" if breaker else "0",
            repr(float(breaker[1])) if breaker else "0",
            repr(float(breaker[2])) if breaker else "0",
        ]
        keys = [b[0] for b in buckets] + [day, leases, bkey]
        stage, code, wait, n = self._call(lambda: self._admit_call(keys=keys, args=args))
        if int(stage) == 0 and max_concurrent is not None:
            self._hold(lease, leases)
        return int(stage), int(code), float(wait), int(n)

    def finish_call(
        self,
        tenant: str,
        lease: str | None,
        skill: str,
        verdict: str,
        threshold: int,
        window_s: float | None,
    ) -> str:
        """Free ``lease`` and record ``verdict`` (``ok``, ``fail`` or ``none``) for the breaker."""
        if lease is not None:
            with self._lock:
                self._leases.pop(lease, None)
        with self._lock:
            self._seq += 1
            member = f"{self.node_id}/{self._seq}"
        keys = [
            self.tenant_key(tenant, "leases"),
            self.skill_key(skill, "breaker"),
            self.skill_key(skill, "failures"),
        ]
        args = [lease or "", verdict, str(threshold), repr(-1.0 if window_s is None else window_s)]
        args.append(member)
        return str(self._call(lambda: self._finish_call(keys=keys, args=args)))

    # -- breakers ----------------------------------------------------------------------------

    def breaker_allow(self, skill: str, cooldown_s: float, probe_ttl_s: float) -> tuple[int, float]:
        """``(1, 0)`` closed, ``(2, 0)`` this call is the single half-open probe, ``(0, wait)``
        refused."""
        key = self.skill_key(skill, "breaker")
        code, wait = self._call(
            lambda: self._b_allow(keys=[key], args=[repr(cooldown_s), repr(probe_ttl_s)])
        )
        return int(code), float(wait)

    def breaker_record(self, skill: str, what: str, threshold: int, window_s: float | None) -> str:
        key, fails = self.skill_key(skill, "breaker"), self.skill_key(skill, "failures")
        with self._lock:
            self._seq += 1
            member = f"{self.node_id}/{self._seq}"
        args = [what, str(threshold), repr(-1.0 if window_s is None else window_s), member]
        return str(self._call(lambda: self._b_record(keys=[key, fails], args=args)))

    def breaker_states(self, skills: Sequence[str], cooldown_s: float) -> list[str]:
        keys = [self.skill_key(s, "breaker") for s in skills]
        if not keys:
            return []
        return [str(s) for s in self._call(lambda: self._b_state(keys=keys, args=[cooldown_s]))]

    # -- cache and approvals -----------------------------------------------------------------

    def get(self, key: str) -> str | None:
        out = self._call(lambda: self._client.get(key))
        return None if out is None else str(out)

    def put(self, key: str, value: str, ttl_s: float) -> None:
        self._call(lambda: self._client.set(key, value, px=max(1, int(ttl_s * 1000))))

    def publish(self, channel: str, message: str) -> int:
        return int(self._call(lambda: self._client.publish(self.key(channel), message)))

    def close(self) -> None:
        self._stop.set()
        t = self._renewer
        if t is not None:
            t.join(timeout=2)
        self._client.close()
