"""``ProcessExecutor``: the kernel's executor for a sandboxed runtime, run in the worker pool.

It wraps the in-process executor of the same runtime: ``prepare`` compiles into the verified
cache here what it lacks (workers only load, verifying each entry; the Python runner, when
already cached, is not loaded here at all) and tells the pool to preload it;
``execute`` sends the call to a worker. ``wrap_executors`` swaps the built-in ``wasm``,
``component`` and ``python`` executors for these when the policy says ``isolation =
"process"``; executors a plugin registered are left in-process (a worker cannot import them).
A worker that lacks a verified artifact (the cache folder deleted, emptied or corrupted while
it ran) makes the call repair the cache and recycle the workers, then retry once
(``repair.py``); compiling and repairing never count against the call's deadline.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, Final, final

from bastion.errors import ErrorCode, ExecutionError
from bastion.executor import ExecutionRequest, Executor

from ..cache import CacheMissError
from ..startwait import excluding
from .pool import WorkerPool, WorkerSettings
from .repair import repair

__all__ = ["SANDBOXED_RUNTIMES", "ProcessExecutor", "wrap_executors"]

SANDBOXED_RUNTIMES: Final[frozenset[str]] = frozenset({"wasm", "component", "python"})
_BUILTIN_PREFIX: Final[str] = "bastion.sandbox."


@final
class ProcessExecutor:
    """Runs one sandboxed runtime in the shared ``WorkerPool``."""

    def __init__(self, local: Executor, pool: WorkerPool, owners: list[Any]) -> None:
        self.runtime = local.runtime
        self.local = local
        self.pool = pool
        self._owners = owners
        self._closed = False
        self._prepared: set[Path] = set()

    def prepare(self, entry: Path) -> None:
        """Compile and check in this process (fills the cache), then preload in workers.
        The first worker is started before the local work, so the two overlap. What is
        already compiled in the cache is not loaded here (``stage``): workers load and
        verify it, and report a miss, which ``execute`` repairs."""
        self.pool.start()
        stage = getattr(self.local, "stage", None)
        if not (callable(stage) and stage(entry)):
            self.local.prepare(entry)
        self._prepared.add(entry)
        self.pool.prepare(self.runtime, entry)

    def execute(self, request: ExecutionRequest) -> bytes:
        """Run the call in a worker process (hard deadline, cancellation, crash isolation).

        The entry is compiled here first if it was not prepared: workers may read the cache
        but never write it. A worker's cache miss is repaired, then the call is retried once;
        the host time spent on either is given back to the call's deadline."""
        since = time.monotonic()
        if request.entry not in self._prepared:
            self.prepare(request.entry)
        request = excluding(request, since)
        try:
            return self.pool.run(request)
        except CacheMissError as miss:
            since = time.monotonic()
            recycled = repair(self.pool, self.runtime, request.entry, miss)
            with contextlib.suppress(Exception):  # the audit sink's failure is not the call's
                request.audit("worker", {"event": "cache_repaired", "recycled": recycled})
            request = excluding(request, since)
        try:
            return self.pool.run(request)
        except CacheMissError as again:
            raise ExecutionError(
                ErrorCode.INTERNAL,
                "the sandbox workers cannot load the compile cache even after it was repaired",
                detail=again.detail,
            ) from None

    def close(self) -> None:
        """Close the local executor; the last proxy to close stops the pool."""
        if self._closed:
            return
        self._closed = True
        self.local.close()
        with _owners_lock:
            if self in self._owners:
                self._owners.remove(self)
            last = not self._owners
        if last:
            self.pool.close()


_owners_lock = threading.Lock()


def _is_builtin(ex: Executor) -> bool:
    target = getattr(ex, "_target", "")
    return isinstance(target, str) and target.startswith(_BUILTIN_PREFIX)


def wrap_executors(
    executors: MutableMapping[str, Executor], settings: WorkerSettings, *, cache_root: Path
) -> WorkerPool | None:
    """Replace the built-in sandboxed executors with pool-backed ones (in place)."""
    chosen = [rt for rt, ex in executors.items() if rt in SANDBOXED_RUNTIMES and _is_builtin(ex)]
    if not chosen:
        return None
    pool = WorkerPool(settings, cache_root=cache_root)
    owners: list[Any] = []
    for rt in chosen:
        proxy = ProcessExecutor(executors[rt], pool, owners)
        owners.append(proxy)
        executors[rt] = proxy
    return pool
