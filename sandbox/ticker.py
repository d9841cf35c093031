"""The epoch ticker: one daemon thread advancing the engine's epoch every ``TICK_MS``.

The epoch follows the wall clock: after a late wake-up (the thread needs the GIL, which a
CPU-bound Python thread holds for up to a switch interval) the missed ticks are issued at once,
so the epoch never lags far behind real time and never runs ahead of it. A burst can make a
guest reach its epoch deadline early, so the deadline is only a trigger: when it runs out, the
store's epoch callback (``store.py``) checks the wall clock and extends it if the request's
deadline has not really passed. A guest therefore never stops before its deadline, and stops
within about two ticks (plus a GIL wait) after it.

The ticker ticks only while guest code may run: every place that enters a guest
(instantiation, which runs the start function, and each call) does so inside ``with
guest_running():``; once no guest has run for ``_LINGER_S`` the thread sleeps on an event
instead of waking every tick (an idle worker used to wake 200 times a second for nothing), and
the next guest wakes it. It resumes with a fresh
schedule whose first tick is immediate (no burst for the paused time); a store armed before a
pause is re-armed or checked against the wall clock by its epoch callback, so a pause never
shortens or stretches a deadline.
``ensure_running()`` pins it ticking regardless (for code that drives its own stores on the
shared engine); ``stop()`` ends the thread (also at interpreter exit), which can start again.
``remaining_ms(deadline)`` is the wall-clock companion for time spent in host calls, where
epochs do not interrupt.

``wake_at(deadline)`` adds one off-schedule tick at that instant: a store arms its epoch to
fire at the last tick before its deadline or at the deadline's own tick (``store.py``), so a
spinning guest traps at its deadline, not up to a tick after it (the timeout overshoot was
half a tick on average and a whole one at worst). ``unwake(deadline)`` takes such a tick back
when its store is dropped or re-armed first: calls in a row would otherwise wake the thread
(and take the GIL) once more per call, at a deadline long after that call ended.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import heapq
import threading
import time
from collections.abc import Callable
from typing import Final

import wasmtime
from wasmtime import _ffi as ffi

from bastion.logs import get_logger

from .engine import TICK_MS, get_engine

__all__ = [
    "Ticker",
    "ensure_running",
    "guest_running",
    "name_os_thread",
    "remaining_ms",
    "stop",
    "ticker",
    "unwake",
    "wake_at",
]

_log = get_logger("bastion.sandbox.ticker")
_MAX_BURST: Final[int] = 1000
_LINGER_S: Final[float] = 0.25
"""How long the ticker keeps ticking after the last guest left (calls in a row keep its
schedule; an idle process stops waking)."""
_MAX_WAKES: Final[int] = 4096
"""Deadlines waited for at once; past this, a deadline gets only the periodic ticks."""


_PR_SET_NAME: Final[int] = 15


def name_os_thread(name: str) -> None:
    """Give the calling thread ``name`` (at most 15 bytes) in the OS (``/proc/.../comm``,
    ``top -H``): a worker's CPU can then be told apart per thread. Best effort: a platform
    without ``prctl`` keeps the interpreter's name."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(_PR_SET_NAME, name.encode("ascii")[:15], 0, 0, 0)


class Ticker:
    """Owns the ticker thread; thread-safe start/stop, restartable."""

    def __init__(self, tick_ms: int = TICK_MS) -> None:
        self._tick_s = tick_ms / 1000.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._go = threading.Event()
        """Set while the thread should tick: pinned, or a guest is running."""
        self._pinned = False
        self._active = 0
        self._last_leave = 0.0
        self.ticks = 0
        """Ticks issued since the first start (diagnostics and tests)."""
        self.pauses = 0
        """Times the thread went to sleep with no guest running (diagnostics and tests)."""
        self._wakes: list[float] = []
        """A heap of deadlines (``time.monotonic()``) each due one off-schedule tick."""
        self._unwoken: dict[float, int] = {}
        """Deadlines still in ``_wakes`` taken back by ``unwake`` (how many times each): skipped,
        neither waited for nor ticked."""
        self._cv = threading.Condition(threading.Lock())
        """Guards ``_wakes``; the ticking thread waits on it, so a sooner deadline wakes it."""
        self._planned = 0.0
        """When the ticking thread next wakes by itself."""

    def wake_at(self, deadline: float) -> bool:
        """Tick once more at ``deadline`` (no GIL release; bounded: see ``_MAX_WAKES``);
        whether it was booked (only a booked tick may be taken back with ``unwake``)."""
        with self._cv:
            if len(self._wakes) >= _MAX_WAKES:
                return False
            heapq.heappush(self._wakes, deadline)
            if deadline < self._planned:
                self._cv.notify()
            return True

    def unwake(self, deadline: float) -> None:
        """Take back one tick ``wake_at(deadline)`` booked (its store no longer runs): the
        thread will not wake for it. A deadline already past is left alone: it may have been
        ticked and taken off already (a past deadline's tick costs nothing more)."""
        with self._cv:  # checked under the lock: the thread takes only past deadlines off
            if deadline <= time.monotonic():
                return
            unwoken = self._unwoken
            unwoken[deadline] = unwoken.get(deadline, 0) + 1

    def _taken_back(self, deadline: float) -> bool:
        """Whether ``deadline`` (just taken off the heap) was unwoken; counts it off. With
        ``_cv`` held."""
        n = self._unwoken.get(deadline, 0)
        if not n:
            return False
        if n == 1:
            del self._unwoken[deadline]
        else:
            self._unwoken[deadline] = n - 1
        return True

    @property
    def running(self) -> bool:
        t = self._thread
        return t is not None and t.is_alive()

    def ensure_running(self) -> None:
        """Start the thread if it is not running, ticking until ``stop()`` (pinned)."""
        with self._lock:
            self._pinned = True
            self._go.set()
        self._start()

    def enter(self) -> None:
        """A guest starts running: tick (starting the thread if needed) until ``leave``."""
        with self._lock:
            self._active += 1
            if not self._go.is_set():
                self._go.set()
        if not self.running:
            self._start()

    def leave(self) -> None:
        """The guest ``enter`` announced stopped running."""
        with self._lock:
            self._active = max(self._active - 1, 0)
            if self._active == 0:
                self._last_leave = time.monotonic()

    def _may_sleep(self) -> bool:
        """Stop ticking if no guest has run for ``_LINGER_S`` (and nobody pinned it)."""
        with self._lock:
            if self._pinned or self._active:
                return False
            if time.monotonic() - self._last_leave < _LINGER_S:
                return False
            self._go.clear()
            return True

    def _start(self) -> None:
        if self.running:
            return
        with self._lock:
            if self.running:
                return
            if not (self._pinned or self._active):
                self._go.clear()  # stop() set it to wake the old thread
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
            self._pinned = False
            self._stop.set()
            self._go.set()  # wake a paused thread so it sees the stop
        with self._cv:
            self._cv.notify_all()  # and a ticking one
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
        name_os_thread("bastion-ticker")
        bump = _epoch_incrementer(get_engine())
        period = self._tick_s
        go = self._go
        bump()  # the first tick at once, as after a pause
        self.ticks += 1
        t0 = time.monotonic()
        issued = 0
        wakes, cv = self._wakes, self._cv
        while not stop.is_set():
            if not go.is_set():
                self.pauses += 1
                go.wait()
                if stop.is_set():
                    return
                # A fresh schedule, no burst for the pause; its first tick now, as the shared
                # ticker's may come right after a store starts (the "+1" of deadline_ticks), so
                # a guest stops at its deadline, not a tick period after it.
                bump()
                self.ticks += 1
                t0, issued = time.monotonic(), 0
                continue
            with cv:
                wake = t0 + (issued + 1) * period
                while wakes and wakes[0] in self._unwoken:  # taken back: not waited for
                    self._taken_back(heapq.heappop(wakes))
                if wakes and wakes[0] < wake:
                    wake = wakes[0]
                self._planned = wake
                if not stop.is_set():
                    cv.wait(max(wake - time.monotonic(), 0.0))
            if stop.is_set():
                return
            if self._may_sleep():
                continue
            now = time.monotonic()
            # Catch up with the wall clock (the periodic ticks never run ahead of it): waking
            # up needs the GIL, which a busy Python thread may hold for a whole switch interval.
            due = int((now - t0) / period)
            n = min(max(due - issued, 0), _MAX_BURST)
            issued = max(issued + n, due)
            if wakes and wakes[0] <= now:
                due_tick = False
                with cv:
                    while wakes and wakes[0] <= now:
                        due_tick |= not self._taken_back(heapq.heappop(wakes))
                n += due_tick  # the deadline's own tick
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
    """Start the process-wide ticker if needed and keep it ticking (pinned) until ``stop()``."""
    _TICKER.ensure_running()


class _GuestRunning:
    """``with guest_running():`` around code that runs guest instructions."""

    __slots__ = ()

    def __enter__(self) -> None:
        _TICKER.enter()

    def __exit__(self, *exc: object) -> None:
        _TICKER.leave()


_GUEST = _GuestRunning()


def guest_running() -> _GuestRunning:
    """A context manager: the process-wide ticker ticks while any such block is open."""
    return _GUEST


def stop() -> None:
    """Stop the process-wide ticker (restartable)."""
    _TICKER.stop()


def wake_at(deadline: float) -> bool:
    """Have the process-wide ticker tick at ``deadline`` too; whether it was booked."""
    return _TICKER.wake_at(deadline)


def unwake(deadline: float) -> None:
    """Take back a tick ``wake_at(deadline)`` booked."""
    _TICKER.unwake(deadline)


def remaining_ms(deadline: float) -> float:
    """Milliseconds left until ``deadline`` (a ``time.monotonic()`` value); negative if past."""
    return (deadline - time.monotonic()) * 1000.0


atexit.register(stop)
