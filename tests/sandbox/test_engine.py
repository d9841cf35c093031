"""Engine configuration, deadline arithmetic and the epoch ticker."""

from __future__ import annotations

import time

import pytest
import wasmtime
from hypothesis import given
from hypothesis import strategies as st

from bastion.sandbox import engine, ticker
from bastion.sandbox.engine import (
    TICK_MS,
    configure_engine,
    deadline_ticks,
    engine_fingerprint,
    get_engine,
)


def test_one_engine_per_process() -> None:
    assert get_engine() is get_engine()


def test_fingerprint_names_version_and_every_setting() -> None:
    fp = engine_fingerprint()
    assert "wasmtime=50.0.1" in fp
    for name in engine.EngineSettings.__dataclass_fields__:
        # How instances are allocated (pooling) does not change compiled code: not named.
        assert (f"{name}=" in fp) is (name not in engine.ALLOCATOR_ONLY)


def test_configure_after_creation_is_refused() -> None:
    get_engine()
    with pytest.raises(RuntimeError, match="consume_fuel"):
        configure_engine(consume_fuel=True)


@given(st.floats(min_value=0.001, max_value=3_600_000))
def test_deadline_never_early(timeout_ms: float) -> None:
    # A shared ticker may tick right after the store starts: one tick is "free".
    assert (deadline_ticks(timeout_ms) - 1) * TICK_MS >= timeout_ms


def test_ticker_advances_epoch_and_restarts() -> None:
    t = ticker.ticker()
    t.ensure_running()
    start = t.ticks
    deadline = time.monotonic() + 5
    while t.ticks < start + 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert t.ticks >= start + 3
    t.stop()
    assert not t.running
    t.ensure_running()
    assert t.running


def test_epoch_interrupts_a_guest() -> None:
    ticker.ensure_running()
    store = wasmtime.Store(get_engine())
    module = wasmtime.Module(get_engine(), '(module (func (export "f") (loop (br 0))))')
    inst = wasmtime.Instance(store, module, [])
    store.set_epoch_deadline(deadline_ticks(20))
    with pytest.raises(wasmtime.Trap) as info:
        inst.exports(store)["f"](store)  # type: ignore[operator]
    assert info.value.trap_code is wasmtime.TrapCode.INTERRUPT


def test_remaining_ms() -> None:
    assert ticker.remaining_ms(time.monotonic() + 1) > 900
    assert ticker.remaining_ms(time.monotonic() - 1) < 0


def test_ticker_sleeps_while_no_guest_runs_and_resumes_for_one() -> None:
    t = ticker.Ticker()
    try:
        t.enter()  # a guest starts: the thread starts and ticks
        deadline = time.monotonic() + 5
        while t.ticks < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert t.ticks >= 3
        t.leave()  # no guest runs: the thread goes to sleep within a tick
        deadline = time.monotonic() + 5
        while t.pauses < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert t.pauses >= 1
        idle = t.ticks
        time.sleep(0.1)  # twenty tick periods
        assert t.ticks == idle
        assert t.running
        t.enter()  # the next guest wakes it
        deadline = time.monotonic() + 5
        while t.ticks < idle + 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert t.ticks >= idle + 3
        t.leave()
    finally:
        t.stop()
    assert not t.running


def test_guest_running_ticks_for_a_spinning_guest_without_a_pinned_ticker() -> None:
    ticker.stop()  # no pin: only the guest's own block makes the epoch advance
    store = wasmtime.Store(get_engine())
    module = wasmtime.Module(get_engine(), '(module (func (export "f") (loop (br 0))))')
    inst = wasmtime.Instance(store, module, [])
    store.set_epoch_deadline(deadline_ticks(20))
    with pytest.raises(wasmtime.Trap) as info, ticker.guest_running():
        inst.exports(store)["f"](store)  # type: ignore[operator]
    assert info.value.trap_code is wasmtime.TrapCode.INTERRUPT
