"""One long-lived thread that runs the pool's background jobs (reaping a killed worker,
starting its replacement) in order, so a call past its deadline hands them off and returns.

Why not ``threading.Thread(...).start()`` on the call's path: ``start()`` waits until the new
thread runs, which needs the GIL; behind a busy host thread that is a whole switch interval
(5 ms) added to a ``TIMEOUT`` that should come back at the deadline. Putting a job on a queue
never releases the GIL. The thread holds no reference to the pool between jobs (the pool's
finalizer still runs when the pool is dropped without ``close()``).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, final

from bastion.logs import get_logger

__all__ = ["Launcher"]

_log = get_logger("bastion.sandbox.workers")
_Job = tuple[Callable[..., None], tuple[Any, ...]]


def _loop(jobs: queue.SimpleQueue[_Job | None]) -> None:
    while True:
        job = jobs.get()
        if job is None:
            return
        fn, args = job
        try:
            fn(*args)
        except Exception:
            _log.exception("worker.background_job_failed")
        del job, fn, args  # no reference to the pool while idle


@final
class Launcher:
    """Runs submitted callables one after the other on a daemon thread started on demand."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def ensure_started(self) -> None:
        """Start the thread now if it is not running (call this off the deadline path)."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=_loop, args=(self._jobs,), name="bastion-worker-launcher", daemon=True
                )
                self._thread.start()

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        """Queue ``fn(*args)``; starts the thread only if it is not running yet."""
        self._jobs.put((fn, args))
        if self._thread is None or not self._thread.is_alive():
            self.ensure_started()

    def stop(self, timeout: float = 30.0) -> None:
        """Run what is queued, then end the thread (a later ``submit`` starts a new one)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        self._jobs.put(None)
        if thread is not threading.current_thread():
            thread.join(timeout)
