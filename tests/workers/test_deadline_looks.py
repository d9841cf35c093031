"""What the pool does at a call's deadline: a worker still *running* (guest code, which the
epoch stops) gets the grace to answer; a worker *blocked* (asleep in WASI, in a host call) is
killed at once, without waiting for the grace; what arrived is read before any kill.

Every pool here has a grace of 20 s, far longer than any call: a call that ends before it was
ended by the look at the deadline, not by the grace running out."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bastion.errors import ErrorCode, ExecutionError
from bastion.sandbox import ticker as ticker_mod
from bastion.sandbox.workers.procstate import is_running
from tests.sandbox.guestbuild import GUESTS, build_c
from tests.workers.conftest import ATTACK_ENTRY, MakePool, MakeRequest

LONG_GRACE_MS = 20_000
SPIN = "def run() -> dict:\n    while True:\n        pass\n"
SLEEPY = "import time\n\ndef run() -> dict:\n    time.sleep(30)\n    return {}\n"
HELLO = "def run(name: str = 'x') -> dict:\n    return {'hi': name}\n"


def _timeout(fn: Callable[[], object]) -> float:
    t0 = time.monotonic()
    with pytest.raises(ExecutionError) as info:
        fn()
    assert info.value.error_code is ErrorCode.TIMEOUT
    return time.monotonic() - t0


class TestBlockedWorkerKilledAtTheDeadline:
    def test_python_guest_asleep_is_killed_without_waiting_for_the_grace(
        self, make_pool: MakePool, pyskill: Callable[[str, str], Path], request_for: MakeRequest
    ) -> None:
        pool = make_pool(grace_ms=LONG_GRACE_MS)
        hello, sleepy = pyskill("hello", HELLO), pyskill("sleepy", SLEEPY)
        pool.run(request_for(hello))
        took = _timeout(lambda: pool.run(request_for(sleepy, timeout_ms=200)))
        assert took < LONG_GRACE_MS / 1000 / 2
        assert pool.stats.timeouts_killed == 1
        assert pool.run(request_for(hello, {"name": "next"})) == b'{"hi": "next"}'

    def test_wasi_guest_asleep_is_killed_without_waiting_for_the_grace(
        self, make_pool: MakePool, wasm_prepared: Callable[[Path], Path], skills_dir: Path,
        request_for: MakeRequest,
    ) -> None:  # fmt: skip
        module = skills_dir / "sleep.wasm"
        module.write_bytes(build_c(GUESTS / "sleep.c"))
        wasm_prepared(module)
        pool = make_pool(grace_ms=LONG_GRACE_MS)
        took = _timeout(lambda: pool.run(request_for(module, runtime="wasm", timeout_ms=200)))
        assert took < LONG_GRACE_MS / 1000 / 2

    def test_host_code_asleep_past_the_deadline_is_killed_before_it_answers(
        self, make_pool: MakePool, request_for: MakeRequest
    ) -> None:
        # It would answer 0.3 s after its deadline, well inside the grace: asleep, it is not
        # given the grace, so the call is TIMEOUT, not that late answer.
        pool = make_pool(attack=True, grace_ms=LONG_GRACE_MS)
        req = request_for(ATTACK_ENTRY, {"do": "nap_past_deadline"}, runtime="attack",
                          timeout_ms=200)  # fmt: skip
        _timeout(lambda: pool.run(req))
        assert pool.stats.timeouts_killed == 1


class TestRunningWorkerGetsTheGrace:
    def test_spinning_guest_is_stopped_by_the_epoch_and_its_worker_kept(
        self, make_pool: MakePool, pyskill: Callable[[str, str], Path], request_for: MakeRequest
    ) -> None:
        pool = make_pool(grace_ms=LONG_GRACE_MS)
        hello, spin = pyskill("hello", HELLO), pyskill("spin", SPIN)
        pool.run(request_for(hello))
        before = pool.pids()
        took = _timeout(lambda: pool.run(request_for(spin, timeout_ms=200)))
        assert took < LONG_GRACE_MS / 1000 / 2
        assert pool.stats.timeouts_killed == 0
        assert pool.pids() == before  # the same worker answers the next call
        assert pool.run(request_for(hello, {"name": "same"})) == b'{"hi": "same"}'

    def test_host_code_running_past_the_deadline_answers_within_the_grace(
        self, make_pool: MakePool, request_for: MakeRequest
    ) -> None:
        pool = make_pool(attack=True, grace_ms=LONG_GRACE_MS)
        req = request_for(ATTACK_ENTRY, {"do": "busy_past_deadline"}, runtime="attack",
                          timeout_ms=200)  # fmt: skip
        assert pool.run(req) == b'{"answered": "late, running"}'
        assert pool.stats.timeouts_killed == 0


class TestProcState:
    def test_a_spinning_process_is_running_and_a_sleeping_one_is_not(self) -> None:
        import subprocess
        import sys

        spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        nap = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            time.sleep(0.5)
            assert is_running(spin.pid) is True
            assert is_running(nap.pid) is False
        finally:
            for p in (spin, nap):
                p.kill()
                p.wait()
        assert is_running(spin.pid) is False  # gone


class TestDeadlineTick:
    def test_a_tick_is_issued_at_a_booked_deadline_between_periodic_ticks(self) -> None:
        t = ticker_mod.Ticker(tick_ms=60_000)  # the first periodic tick is a minute away
        t.ensure_running()
        try:
            end = time.monotonic() + 10
            while t.ticks == 0 and time.monotonic() < end:
                time.sleep(0.01)  # the tick a (re)started ticker issues at once
            base = t.ticks
            t.wake_at(time.monotonic() + 0.05)
            while t.ticks == base and time.monotonic() < end:
                time.sleep(0.01)
            assert t.ticks == base + 1
            time.sleep(0.2)
            assert t.ticks == base + 1  # one tick per booked deadline, no more
        finally:
            t.stop()

    def test_a_tick_taken_back_is_neither_waited_for_nor_issued(self) -> None:
        t = ticker_mod.Ticker(tick_ms=60_000)
        t.ensure_running()
        try:
            end = time.monotonic() + 10
            while t.ticks == 0 and time.monotonic() < end:
                time.sleep(0.01)
            base = t.ticks
            soon = time.monotonic() + 0.05
            assert t.wake_at(soon) and t.wake_at(soon)  # two stores, the same deadline
            t.unwake(soon)  # one of them dropped: the other's tick still comes
            kept = time.monotonic() + 0.15
            assert t.wake_at(kept)
            gone = time.monotonic() + 0.1
            assert t.wake_at(gone)
            t.unwake(gone)
            time.sleep(0.4)
            assert t.ticks == base + 2  # at `soon` (once) and at `kept`; none at `gone`
            assert t._unwoken == {}  # nothing taken back is kept once its time has come
            t.unwake(time.monotonic() - 1)  # a deadline already past: left alone
            assert t._unwoken == {}
        finally:
            t.stop()
