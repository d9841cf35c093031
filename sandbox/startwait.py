"""Bounded start-up waits: slow host work a call needs never counts against its timeout.

Building the Python runner, compiling a module or component on its first use, loading one in a
worker, repairing the compile cache: each runs once per key on a background thread, and a
caller waits for it at most ``wait_s()`` seconds (``$BASTION_RUNNER_WAIT_S``, default 300).
If the wait runs out the caller gets ``ExecutionError(NOT_READY)`` (retryable; a circuit
breaker neither counts nor clears on it) while the work goes on, so a later call finds it done.
The time a call spent waiting is then given back to its deadline (``excluding``).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Hashable
from typing import Final, Generic, TypeVar

from bastion.errors import ErrorCode, ExecutionError
from bastion.executor import ExecutionRequest

__all__ = ["DEFAULT_WAIT_S", "WAIT_ENV", "StartWait", "excluding", "wait_s"]

WAIT_ENV: Final[str] = "BASTION_RUNNER_WAIT_S"
"""Seconds a call waits for host start-up work (runner build, a compile, a cache repair)."""
DEFAULT_WAIT_S: Final[float] = 300.0
_RETRY_AFTER_S: Final[float] = 5.0
_T = TypeVar("_T")


def wait_s() -> float:
    """The start-up wait in seconds: ``$BASTION_RUNNER_WAIT_S`` if it is a number, else 300."""
    try:
        return max(0.0, float(os.environ.get(WAIT_ENV, DEFAULT_WAIT_S)))
    except ValueError:
        return DEFAULT_WAIT_S


def excluding(request: ExecutionRequest, since: float) -> ExecutionRequest:
    """``request`` with the host time spent since ``since`` (monotonic) added to its deadline:
    getting a skill ready is the host's cost, never the skill's."""
    spent = time.monotonic() - since
    if spent <= 0.001:
        return request
    return dataclasses.replace(request, deadline=request.deadline + spent)


class _Job(Generic[_T]):
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: _T | None = None
        self.error: BaseException | None = None


class StartWait(Generic[_T]):
    """Single-flight background jobs by key, each waited for at most a bound."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._jobs: dict[Hashable, _Job[_T]] = {}

    def run(
        self, key: Hashable, work: Callable[[], _T], *, what: str, wait: float | None = None
    ) -> _T:
        """``work()``'s value, run once for ``key`` however many callers ask meanwhile; raises
        ``NOT_READY`` after ``wait`` seconds (default ``wait_s()``), or what ``work`` raised.
        A finished job is forgotten: the caller's own caches keep what it made."""
        with self._lock:
            job = self._jobs.get(key)
            if job is None:
                job = self._jobs[key] = _Job()
                threading.Thread(
                    target=self._work, args=(key, job, work), name=self._name, daemon=True
                ).start()
        limit = wait_s() if wait is None else wait
        if not job.done.wait(limit):
            raise ExecutionError(
                ErrorCode.NOT_READY,
                f"{what} is still in progress (waited {limit:g} s); it goes on in the "
                "background: retry shortly",
                retry_after_s=_RETRY_AFTER_S,
            )
        if job.error is not None:
            raise job.error
        return job.value  # type: ignore[return-value]

    def _work(self, key: Hashable, job: _Job[_T], work: Callable[[], _T]) -> None:
        try:
            job.value = work()
        except BaseException as exc:
            job.error = exc
        finally:
            with self._lock:
                if self._jobs.get(key) is job:
                    del self._jobs[key]
            job.done.set()
