"""Token buckets and circuit breakers under an injected clock: state machines and properties."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from bastion.breaker import BreakerState, CircuitBreaker
from bastion.ratelimit import RateLimiter, RateSpec, TokenBucket

EPS = 1e-9


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class BucketMachine(RuleBasedStateMachine):
    """Never more than ``burst`` calls in an instant; over any span at most burst + rate*span;
    a refused call says how long to wait, and after that wait a call goes through."""

    @initialize(rate=st.sampled_from([0.5, 1.0, 2.0, 10.0, 100.0]), burst=st.integers(1, 6))
    def setup(self, rate: float, burst: int) -> None:
        self.clock = Clock()
        self.bucket = TokenBucket(rate, burst, clock=self.clock)
        self.rate, self.burst = rate, burst
        self.taken: list[float] = []  # times of successful acquisitions
        self.wait: float | None = None

    @rule(dt=st.floats(0, 3, allow_nan=False))
    def advance(self, dt: float) -> None:
        self.clock.now += dt

    @rule()
    def acquire(self) -> None:
        w = self.bucket.try_acquire()
        if w == 0.0:
            self.taken.append(self.clock.now)
            self.wait = None
        else:
            assert 0 < w <= 1 / self.rate + EPS
            self.wait = w

    @precondition(lambda self: self.wait is not None)
    @rule()
    def wait_then_acquire(self) -> None:
        assert self.wait is not None
        self.clock.now += self.wait + 1e-7
        assert self.bucket.try_acquire() == 0.0
        self.taken.append(self.clock.now)
        self.wait = None

    @invariant()
    def never_more_than_burst_plus_refill(self) -> None:
        if not hasattr(self, "taken"):
            return
        now = self.clock.now
        assert sum(1 for t in self.taken if t == now) <= self.burst
        for i, t0 in enumerate(self.taken):
            span = now - t0
            assert len(self.taken) - i <= self.burst + self.rate * span + 1e-6

    @invariant()
    def tokens_bounded(self) -> None:
        if hasattr(self, "bucket"):
            assert -EPS <= self.bucket.tokens <= self.burst + EPS


TestBucketMachine = BucketMachine.TestCase
TestBucketMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


@given(rate=st.floats(0.1, 1000), burst=st.integers(1, 50), idle=st.floats(0, 100))
def test_bucket_refills_at_rate_up_to_burst(rate: float, burst: int, idle: float) -> None:
    clock = Clock()
    b = TokenBucket(rate, burst, clock=clock)
    while b.try_acquire() == 0.0:
        pass
    clock.now += idle
    got = 0
    while b.try_acquire() == 0.0:
        got += 1
    low = min(burst, int(idle * rate * (1 - 1e-9)))
    assert low <= got <= min(burst, low + 1)


def test_limiter_refunds_the_skill_token_when_the_tenant_refuses() -> None:
    clock = Clock()
    lim = RateLimiter(default=RateSpec(1, 2), tenants={"small": RateSpec(1, 1)}, clock=clock)
    assert lim.acquire("calc", "small") is None
    which, wait = lim.acquire("calc", "small") or ("", 0.0)
    assert which == "tenant" and wait == pytest.approx(1.0)
    # The skill bucket still holds its second token: another tenant gets it.
    assert lim.acquire("calc", "big") is None
    assert lim.acquire("calc", "big") == ("skill", pytest.approx(1.0))


def test_bucket_is_thread_safe() -> None:
    clock = Clock()
    b = TokenBucket(1.0, 100, clock=clock)
    ok: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        n = sum(1 for _ in range(50) if b.try_acquire() == 0.0)
        with lock:
            ok.append(n)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(ok) == 100


class BreakerMachine(RuleBasedStateMachine):
    """Closed -> open after N failures within the window; open -> half-open after the cool-down;
    half-open admits one probe; its success closes, its failure re-opens."""

    @initialize(
        threshold=st.integers(1, 4),
        cooldown=st.sampled_from([1.0, 5.0, 30.0]),
        window=st.sampled_from([None, 2.0, 10.0]),
    )
    def setup(self, threshold: int, cooldown: float, window: float | None) -> None:
        self.clock = Clock()
        self.b = CircuitBreaker(threshold, cooldown, window_s=window, clock=self.clock)
        self.threshold, self.cooldown, self.window = threshold, cooldown, window
        self.fails: list[float] = []  # failures counted while closed
        self.opened_at: float | None = None
        self.probe = False
        self.last = BreakerState.CLOSED

    def expected(self) -> str:
        if self.opened_at is None:
            return BreakerState.CLOSED
        if self.clock.now - self.opened_at >= self.cooldown:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 3.0, 12.0, 40.0]))
    def tick(self, dt: float) -> None:
        self.clock.now += dt

    def _call(self, fails: bool) -> None:
        state = self.expected()
        allowed = self.b.allow()
        if state == BreakerState.CLOSED:
            assert allowed
        elif state == BreakerState.OPEN:
            assert not allowed
            assert 0 < self.b.retry_after_s() <= self.cooldown
            return
        else:
            assert allowed == (not self.probe)
            if not allowed:
                return
            self.probe = True
            # While the probe is out nobody else gets through.
            assert not self.b.allow()
        if fails:
            self.b.record_failure()
            if self.probe:
                self.opened_at, self.fails = self.clock.now, []
            else:
                self.fails.append(self.clock.now)
                if self.window is not None:
                    self.fails = [t for t in self.fails if self.clock.now - t <= self.window]
                if len(self.fails) >= self.threshold:
                    self.opened_at, self.fails = self.clock.now, []
        else:
            self.b.record_success()
            if self.probe or self.window is None:
                self.fails = []
            self.opened_at = None
        self.probe = False

    @rule()
    def call_fails(self) -> None:
        self._call(True)

    @rule()
    def call_succeeds(self) -> None:
        self._call(False)

    @invariant()
    def state_and_transitions(self) -> None:
        if not hasattr(self, "b"):
            return
        state = self.b.state
        assert state == self.expected()
        allowed_moves = {
            BreakerState.CLOSED: {BreakerState.CLOSED, BreakerState.OPEN},
            BreakerState.OPEN: {BreakerState.OPEN, BreakerState.HALF_OPEN},
            BreakerState.HALF_OPEN: {
                BreakerState.HALF_OPEN,
                BreakerState.CLOSED,
                BreakerState.OPEN,
            },
        }
        # Open only ever becomes half-open (by time); closed only opens (by failures).
        assert state in allowed_moves[self.last]
        self.last = state


TestBreakerMachine = BreakerMachine.TestCase
TestBreakerMachine.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)


def test_breaker_windowed_failures_expire() -> None:
    clock = Clock()
    b = CircuitBreaker(3, 30, window_s=60, clock=clock)
    b.record_failure()
    b.record_failure()
    clock.now += 61
    b.record_failure()
    assert b.state == BreakerState.CLOSED and b.failures == 1
    b.record_success()  # successes do not forget failures within the window
    b.record_failure()
    b.record_failure()
    assert b.state == BreakerState.OPEN and b.retry_after_s() == 30


def test_breaker_release_gives_the_probe_back() -> None:
    clock = Clock()
    b = CircuitBreaker(1, 5, clock=clock)
    b.record_failure()
    clock.now += 5
    assert b.allow() and not b.allow()
    b.release()
    assert b.allow()


@pytest.mark.parametrize("bad", [{"threshold": 0}, {"cooldown_s": -1}, {"window_s": 0}])
def test_breaker_refuses_bad_settings(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        CircuitBreaker(**bad)  # type: ignore[arg-type]


def test_limiter_memory_is_bounded_without_changing_decisions() -> None:
    """Many tenant names: refilled buckets are dropped past the cap; a partly used one is kept,
    so its tenant still sees its own history."""
    clock = Clock()
    lim = RateLimiter(tenant_default=RateSpec(1.0, 2), clock=clock, max_buckets=50)
    assert lim.acquire("s", "busy") is None and lim.acquire("s", "busy") is None
    for i in range(500):
        assert lim.acquire("s", f"t{i}") is None
        clock.now += 0.1
    # Only buckets still refilling are kept past the cap: one token at 1/s refills in 1 s, so
    # at most the last ~10 tenants (0.1 s apart) are, on top of the cap of 50.
    assert len(lim._buckets) <= 61
    # "busy" spent its burst 50 s ago (refilled at 1/s: full again), so it may have been dropped;
    # a new bucket is full too, so the decision is the same either way.
    assert lim.acquire("s", "busy") is None
    # A tenant that is mid-window keeps its state through a sweep.
    assert lim.acquire("s", "hot") is None and lim.acquire("s", "hot") is None
    for i in range(100):
        lim.acquire("s", f"u{i}")
    refused = lim.acquire("s", "hot")
    assert refused is not None and refused[0] == "tenant"


def test_daily_counts_of_past_days_are_forgotten() -> None:
    from bastion.policy import load_policy
    from bastion.tenants import TenantGate

    doc = load_policy(text='[tenants."*"]\ninvocations_per_day = 2\n').doc
    now = [86_400.0 * 20_000 + 10]
    gate = TenantGate(doc.tenants, doc.roles, wall_clock=lambda: now[0])
    for i in range(300):
        assert gate.admit(f"t{i}") is None
        gate.release(f"t{i}")
    assert gate.admit("t0") is None and gate.admit("t0") is not None  # 2 a day, counted
    gate.release("t0")
    now[0] += 86_400  # the next UTC day
    assert gate.admit("new") is None
    assert set(gate._day) == {"new"}  # yesterday's 300 counters are gone
    assert gate.admit("t0") is None  # and t0 starts afresh
