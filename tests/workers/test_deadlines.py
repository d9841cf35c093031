"""Hard deadlines and cancellation: a call ends at its deadline (+ grace) whatever the guest
does, because the worker running it is killed and replaced."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bastion.errors import ErrorCode, ExecutionError
from tests.sandbox.guestbuild import GUESTS, build_c
from tests.workers.conftest import ATTACK_ENTRY, Audit, MakePool, MakeRequest

HELLO = "def run(name: str = 'x') -> dict:\n    return {'hi': name}\n"
SLEEPY = "import time\n\ndef run() -> dict:\n    time.sleep(30)\n    return {}\n"
SPIN = "def run() -> dict:\n    while True:\n        pass\n"

# Far below the 30 s the guests would take: the call must have been stopped, not waited for.
STOPPED_WITHIN_S = 6.0


def _fails(fn: Callable[[], object]) -> tuple[ExecutionError, float]:
    t0 = time.monotonic()
    with pytest.raises(ExecutionError) as info:
        fn()
    return info.value, time.monotonic() - t0


class TestPythonSkillBlockedInSleep:
    def test_stopped_at_the_deadline_and_the_worker_replaced(
        self, make_pool: MakePool, pyskill: Callable[[str, str], Path], request_for: MakeRequest
    ) -> None:
        pool = make_pool()
        hello, sleepy = pyskill("hello", HELLO), pyskill("sleepy", SLEEPY)
        assert pool.run(request_for(hello)) == b'{"hi": "x"}'
        before = pool.pids()
        audit = Audit()
        err, took = _fails(lambda: pool.run(request_for(sleepy, timeout_ms=300, audit=audit)))
        assert err.error_code is ErrorCode.TIMEOUT
        assert "300 ms" in err.message
        assert took < STOPPED_WITHIN_S
        assert ("worker", {"event": "killed", "reason": "timeout"}) in [
            (k, {"event": f["event"], "reason": f.get("reason")}) for k, f in audit.events
        ]
        assert pool.run(request_for(hello, {"name": "again"})) == b'{"hi": "again"}'
        assert set(pool.pids()).isdisjoint(before)
        assert pool.stats.timeouts_killed == 1

    def test_spinning_guest_is_stopped_by_the_epoch(
        self, make_pool: MakePool, pyskill: Callable[[str, str], Path], request_for: MakeRequest
    ) -> None:
        pool = make_pool()
        err, took = _fails(lambda: pool.run(request_for(pyskill("spin", SPIN), timeout_ms=300)))
        assert err.error_code is ErrorCode.TIMEOUT
        assert took < STOPPED_WITHIN_S


class TestWasiGuestBlockedInSleep:
    def test_stopped_at_the_deadline(
        self, make_pool: MakePool, wasm_prepared: Callable[[Path], Path], skills_dir: Path,
        request_for: MakeRequest,
    ) -> None:  # fmt: skip
        module = skills_dir / "sleep.wasm"
        module.write_bytes(build_c(GUESTS / "sleep.c"))
        wasm_prepared(module)
        pool = make_pool()
        err, took = _fails(lambda: pool.run(request_for(module, runtime="wasm", timeout_ms=300)))
        assert err.error_code is ErrorCode.TIMEOUT
        assert took < STOPPED_WITHIN_S


class TestHostCodeBlocked:
    def test_worker_blocked_outside_the_guest_is_killed_at_deadline_plus_grace(
        self, make_pool: MakePool, request_for: MakeRequest
    ) -> None:
        pool = make_pool(attack=True)
        req = request_for(ATTACK_ENTRY, {"do": "sleep"}, runtime="attack", timeout_ms=200)
        err, took = _fails(lambda: pool.run(req))
        assert err.error_code is ErrorCode.TIMEOUT
        assert took < STOPPED_WITHIN_S
        assert pool.stats.timeouts_killed == 1


class TestCancellation:
    def test_cancel_kills_the_call_and_reports_cancelled(
        self, make_pool: MakePool, pyskill: Callable[[str, str], Path], request_for: MakeRequest
    ) -> None:
        pool = make_pool()
        hello, sleepy = pyskill("hello", HELLO), pyskill("sleepy", SLEEPY)
        pool.run(request_for(hello))
        cancel = threading.Event()
        timer = threading.Timer(0.3, cancel.set)
        timer.start()
        try:
            req = request_for(sleepy, timeout_ms=20_000, cancel=cancel)
            err, took = _fails(lambda: pool.run(req))
        finally:
            timer.cancel()
        assert err.error_code is ErrorCode.CANCELLED
        assert took < STOPPED_WITHIN_S
        assert pool.stats.cancelled_killed == 1
        assert pool.run(request_for(hello)) == b'{"hi": "x"}'

    def test_cancel_set_before_the_call_starts(
        self, make_pool: MakePool, pyskill: Callable[[str, str], Path], request_for: MakeRequest
    ) -> None:
        pool = make_pool()
        cancel = threading.Event()
        cancel.set()
        err, _ = _fails(lambda: pool.run(request_for(pyskill("hello", HELLO), cancel=cancel)))
        assert err.error_code is ErrorCode.CANCELLED
