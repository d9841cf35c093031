"""A circuit breaker: stop calling something that keeps failing, then probe it once.

Shared by the model providers (``models.AnthropicModel``) and the kernel (one breaker per skill).
Closed, it counts failures: ``threshold`` consecutive failures open it, or, with ``window_s``,
``threshold`` failures within the last ``window_s`` seconds (successes do not forget them).
Open, it refuses calls for ``cooldown_s``; then it is half-open and admits a single probe: a
success closes it (failures forgotten), a failure opens it for another cool-down, ``release``
gives the probe back without a verdict. ``clock`` is injectable so tests never sleep.

``SharedBreaker`` is the same breaker kept in the shared state store: failures on any replica
count, an open breaker refuses on all, and the half-open probe is single-flight across them
(a probe whose replica died is handed out again after ``probe_ttl_s``). While the store is
down it falls back to a local ``CircuitBreaker`` (the default) or refuses, as
``[state.on_unavailable] breakers`` says.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, final

if TYPE_CHECKING:
    from .state.handle import StateHandle

__all__ = ["Breaker", "BreakerState", "CircuitBreaker", "SharedBreaker"]


class BreakerState:
    """The three states of a ``CircuitBreaker`` (plain strings, stable)."""

    CLOSED: Final = "closed"
    OPEN: Final = "open"
    HALF_OPEN: Final = "half_open"


@final
class CircuitBreaker:
    """Opens after ``threshold`` failures (consecutive, or within ``window_s``); thread-safe."""

    def __init__(
        self,
        threshold: int = 5,
        cooldown_s: float = 30.0,
        *,
        window_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1:
            raise ValueError(f"threshold must be at least 1, got {threshold!r}")
        if cooldown_s < 0:
            raise ValueError(f"cooldown_s must not be negative, got {cooldown_s!r}")
        if window_s is not None and window_s <= 0:
            raise ValueError(f"window_s must be positive or None, got {window_s!r}")
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: deque[float] = deque()
        self._opened_at: float | None = None
        self._probe_out = False

    @property
    def state(self) -> str:
        with self._lock:
            return self._state_locked(self._clock())

    @property
    def failures(self) -> int:
        """Failures currently counted towards opening (0 while open)."""
        with self._lock:
            self._prune(self._clock())
            return len(self._failures)

    def _state_locked(self, now: float) -> str:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if now - self._opened_at >= self.cooldown_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def _prune(self, now: float) -> None:
        if self.window_s is not None:
            while self._failures and now - self._failures[0] > self.window_s:
                self._failures.popleft()

    def allow(self) -> bool:
        """Whether a call may go out now (half-open admits a single probe)."""
        with self._lock:
            state = self._state_locked(self._clock())
            if state == BreakerState.CLOSED:
                return True
            if state == BreakerState.HALF_OPEN and not self._probe_out:
                self._probe_out = True
                return True
            return False

    def retry_after_s(self) -> float:
        """Seconds until the cool-down ends (0 when closed or half-open)."""
        with self._lock:
            if self._opened_at is None:
                return 0.0
            return max(0.0, self.cooldown_s - (self._clock() - self._opened_at))

    def record_success(self) -> None:
        """A call went well: closes a half-open breaker; in window mode keeps past failures."""
        with self._lock:
            if self.window_s is None or self._opened_at is not None:
                self._failures.clear()
            self._opened_at = None
            self._probe_out = False

    def record_failure(self) -> None:
        """A call failed: counts towards opening; a failed probe re-opens at once."""
        with self._lock:
            now = self._clock()
            if self._opened_at is not None and not self._probe_out:
                return  # a straggler that started before the breaker opened
            self._failures.append(now)
            self._prune(now)
            if self._probe_out or len(self._failures) >= self.threshold:
                self._opened_at = now
                self._failures.clear()
            self._probe_out = False

    def release(self) -> None:
        """Give back a probe that ended without a verdict (the next call probes again)."""
        with self._lock:
            self._probe_out = False


@final
class SharedBreaker:
    """A ``CircuitBreaker`` for one skill whose state lives in the shared store."""

    def __init__(
        self,
        state: StateHandle,
        skill: str,
        threshold: int = 5,
        cooldown_s: float = 30.0,
        *,
        window_s: float | None = None,
        probe_ttl_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert state.store is not None
        self._state = state
        self._store = state.store
        self.skill = skill
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.window_s = window_s
        self.probe_ttl_s = probe_ttl_s
        self.local = CircuitBreaker(threshold, cooldown_s, window_s=window_s, clock=clock)
        """Used while the store is down (``breakers = "local"``)."""
        self._wait = threading.local()

    def _fallback(self, exc: Exception) -> None:
        from .state.unavailable import StoreUnavailable

        assert isinstance(exc, StoreUnavailable)
        if self._state.fallback("breakers") != "local":
            raise self._state.refuse("breakers", exc) from None

    @property
    def state(self) -> str:
        from .state.unavailable import StoreUnavailable

        try:
            return self._store.breaker_states([self.skill], self.cooldown_s)[0]
        except StoreUnavailable:
            return self.local.state

    def allow(self) -> bool:
        """Whether a call may go out now; raises ``ExecutionError(STATE_UNAVAILABLE)`` when
        the store is down and breakers fail closed."""
        from .state.unavailable import StoreUnavailable

        try:
            code, wait = self._store.breaker_allow(self.skill, self.cooldown_s, self.probe_ttl_s)
        except StoreUnavailable as exc:
            self._fallback(exc)
            self._wait.value = None
            return self.local.allow()
        self._wait.value = wait
        return code != 0

    def retry_after_s(self) -> float:
        """Seconds until the cool-down ends, as the last ``allow`` in this thread saw it."""
        wait = getattr(self._wait, "value", None)
        return self.local.retry_after_s() if wait is None else float(wait)

    def _record(self, what: str) -> None:
        from .state.unavailable import StoreUnavailable

        try:
            self._store.breaker_record(self.skill, what, self.threshold, self.window_s)
        except StoreUnavailable:
            # Never raises from here: the verdict is kept locally for the fallback breaker.
            {"ok": self.local.record_success, "fail": self.local.record_failure}.get(
                what, self.local.release
            )()

    def record_success(self) -> None:
        self._record("ok")

    def record_failure(self) -> None:
        self._record("fail")

    def release(self) -> None:
        self._record("release")


Breaker = CircuitBreaker | SharedBreaker
"""Either breaker: the kernel calls ``allow``, ``record_*``, ``release``, ``retry_after_s``."""
