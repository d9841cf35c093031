"""The epoch ticker: one daemon thread advancing the engine's epoch every ``TICK_MS``.

The epoch follows the wall clock: after a late wake-up (the thread needs the GIL, which a
CPU-bound Python thread holds for up to a switch interval) the missed ticks are issued at once,
so the epoch never lags far behind real time and never runs ahead of it. A burst can make a
guest reach its epoch deadline early, so the deadline is only a trigger: when it runs out, the
store's epoch callback (``store.py``) checks the wall clock and extends it if the request's
deadline has not really passed. A guest therefore never stops before its deadline, and stops
within about two ticks (plus a GIL wait) after it.

The thread starts lazily (``ensure_running()``), stops on ``stop()`` and at interpreter exit,
and can be started again. ``remaining_ms(deadline)`` is the wall-clock companion for time spent
in host calls, where epochs do not interrupt.

``wake_at(deadline)`` adds one off-schedule tick at that instant: a store arms its epoch to
fire at the last tick before its deadline or at the deadline's own tick (``store.py``), so a
spinning guest traps at its deadline, not up to a tick after it (the timeout overshoot was
half a tick on average and a whole one at worst).
"""

from __future__ import annotations

import atexit
import ctypes
import heapq
import threading
import time
from collections.abc import Callable
from typing import Final

import structlog
import wasmtime
from wasmtime import _ffi as ffi

from .engine import TICK_MS, get_engine

__all__ = ["Ticker", "ensure_running", "remaining_ms", "stop", "ticker", "wake_at"]

_log = structlog.get_logger("bastion.sandbox.ticker")
_MAX_BURST: Final[int] = 1000
_MAX_WAKES: Final[int] = 4096
"""Deadlines waited for at once; past this, a deadline gets only the periodic ticks."""


class Ticker:
    """Owns the ticker thread; thread-safe start/stop, restartable."""

    def __init__(self, tick_ms: int = TICK_MS) -> None:
        self._tick_s = tick_ms / 1000.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ticks = 0
        """Ticks issued since the first start (diagnostics and tests)."""
        self._wakes: list[float] = []
        """A heap of deadlines (``time.monotonic()``) each due one off-schedule tick."""
        self._cv = threading.Condition(threading.Lock())
        """Guards ``_wakes``; the thread sleeps on it, so a sooner deadline wakes it."""
        self._planned = 0.0
        """When the thread next wakes by itself."""

    def wake_at(self, deadline: float) -> None:
        """Tick once more at ``deadline`` (no GIL release; bounded: see ``_MAX_WAKES``)."""
        with self._cv:
            if len(self._wakes) < _MAX_WAKES:
                heapq.heappush(self._wakes, deadline)
                if deadline < self._planned:
                    self._cv.notify()

    @property
    def running(self) -> bool:
        t = self._thread
        return t is not None and t.is_alive()

    def ensure_running(self) -> None:
        """Start the thread if it is not running (cheap when it is)."""
        if self.running:
            return
        with self._lock:
            if self.running:
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(self._stop,), name="bastion-epoch-ticker", daemon=True
            )
            self._thread.start()
            _log.debug("ticker.started", tick_ms=self._tick_s * 1000)

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the thread and wait for it; a later ``ensure_running()`` restarts it."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        with self._cv:
            self._cv.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> Ticker:
        self.ensure_running()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, stop: threading.Event) -> None:
        bump = _epoch_incrementer(get_engine())
        period = self._tick_s
        t0 = time.monotonic()
        issued = 0
        wakes, cv = self._wakes, self._cv
        while True:
            with cv:
                wake = t0 + (issued + 1) * period
                if wakes and wakes[0] < wake:
                    wake = wakes[0]
                self._planned = wake
                if not stop.is_set():
                    cv.wait(max(wake - time.monotonic(), 0.0))
            if stop.is_set():
                return
            now = time.monotonic()
            # Catch up with the wall clock (the periodic ticks never run ahead of it): waking
            # up needs the GIL, which a busy Python thread may hold for a whole switch interval.
            due = int((now - t0) / period)
            n = min(max(due - issued, 0), _MAX_BURST)
            issued = max(issued + n, due)
            if wakes and wakes[0] <= now:
                with cv:
                    while wakes and wakes[0] <= now:
                        heapq.heappop(wakes)
                n += 1  # the deadline's own tick
            for _ in range(n):
                bump()
            self.ticks += n


def _epoch_incrementer(engine: wasmtime.Engine) -> Callable[[], None]:
    """``engine.increment_epoch`` without releasing the GIL (it is one atomic add).

    Through ``ctypes.CDLL`` every call would drop and re-take the GIL, and re-taking it can wait
    a whole switch interval behind a CPU-bound thread; ``PyDLL`` keeps it.
    """
    fn = ctypes.PyDLL(ffi.dll._name).wasmtime_engine_increment_epoch
    fn.argtypes = [ctypes.c_void_p]
    fn.restype = None
    ptr = ctypes.cast(engine.ptr(), ctypes.c_void_p).value

    def bump() -> None:
        fn(ptr)

    return bump


_TICKER = Ticker()


def ticker() -> Ticker:
    """The process-wide ticker."""
    return _TICKER


def ensure_running() -> None:
    """Start the process-wide ticker if needed."""
    _TICKER.ensure_running()


def stop() -> None:
    """Stop the process-wide ticker (restartable)."""
    _TICKER.stop()


def wake_at(deadline: float) -> None:
    """Have the process-wide ticker tick at ``deadline`` too."""
    _TICKER.wake_at(deadline)


def remaining_ms(deadline: float) -> float:
    """Milliseconds left until ``deadline`` (a ``time.monotonic()`` value); negative if past."""
    return (deadline - time.monotonic()) * 1000.0


atexit.register(stop)
