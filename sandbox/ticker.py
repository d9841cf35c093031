"""The epoch ticker: one daemon thread advancing the engine's epoch every ``TICK_MS``.

Why a fixed schedule without catch-up: if the thread is delayed (GIL held, loaded machine) it
increments the epoch once and re-anchors instead of bursting the missed ticks (bursts would stop
guests early). A guest gets ``deadline_ticks(T) = ceil(T/tick) + 1`` ticks, and when they run
out the store's epoch callback (``store.py``) checks the wall clock and extends the deadline if
``T`` has not really elapsed: a guest never stops before its deadline.

The thread starts lazily (``ensure_running()``), stops on ``stop()`` and at interpreter exit,
and can be started again. ``remaining_ms(deadline)`` is the wall-clock companion for time spent
in host calls, where epochs do not interrupt.
"""

from __future__ import annotations

import atexit
import threading
import time

import structlog

from .engine import TICK_MS, get_engine

__all__ = ["Ticker", "ensure_running", "remaining_ms", "stop", "ticker"]

_log = structlog.get_logger("bastion.sandbox.ticker")


class Ticker:
    """Owns the ticker thread; thread-safe start/stop, restartable."""

    def __init__(self, tick_ms: int = TICK_MS) -> None:
        self._tick_s = tick_ms / 1000.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ticks = 0
        """Ticks issued since the first start (diagnostics and tests)."""

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
        engine = get_engine()
        period = self._tick_s
        next_at = time.monotonic() + period
        while True:
            delay = next_at - time.monotonic()
            if delay > 0 and stop.wait(delay):
                return
            if stop.is_set():
                return
            engine.increment_epoch()
            self.ticks += 1
            # Fixed schedule (no drift); if far behind, re-anchor instead of bursting ticks.
            next_at += period
            now = time.monotonic()
            if next_at < now:
                next_at = now + period


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


def remaining_ms(deadline: float) -> float:
    """Milliseconds left until ``deadline`` (a ``time.monotonic()`` value); negative if past."""
    return (deadline - time.monotonic()) * 1000.0


atexit.register(stop)
