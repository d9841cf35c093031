"""Compile-cache repair for workers: a worker only loads; the kernel rebuilds and recycles.

A worker's cache is load-only (``cache.use_load_only``), and its Landlock rules are bound to
the cache folder it started with. So when the folder is deleted, emptied, replaced or an entry
corrupted while workers run, the kernel repairs it, whatever its own in-memory memo holds:

1. before a worker's first call of an entry, the kernel has it load that entry
   (``load_in_worker``: a ``prepare`` frame answered ``prepared``), so loading is host time,
   never the call's, and a miss is found before the call starts; a miss during a call
   (``CacheMissError`` over the wire) is handled the same way;
2. ``repair`` puts a verified artifact back on disk for the call's runtime (one table,
   ``RESTORERS``: the Python runner is rebuilt if its file is gone, a module or component
   re-serialized from memory or compiled), re-creating the folder or refusing an unsafe one
   (``CacheDirError``, ``CACHE_UNSAFE``); it runs once however many calls missed, under the
   bounded start-up wait (``NOT_READY`` if it runs out; the work goes on);
3. the pool recycles every worker started before the repair ended (``WorkerPool.recycle``);
4. the proxy retries the call once, with the repair's time given back to its deadline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from bastion.errors import ErrorCode, ExecutionError
from bastion.logs import get_logger

from ..cache import CacheMissError, default_cache
from ..startwait import StartWait
from .framing import encode_frame

__all__ = ["RESTORERS", "answer_prepare", "load_in_worker", "repair"]

_log = get_logger("bastion.sandbox.workers.repair")
_POLL_S: Final[float] = 0.05


def _restore_runner(_entry: Path) -> bool:
    from ..runner_build import restore_runner

    return restore_runner()


RESTORERS: Final[Mapping[str, Callable[[Path], bool]]] = {
    "python": _restore_runner,
    "wasm": lambda entry: default_cache().restore("module", entry),
    "component": lambda entry: default_cache().restore("component", entry),
}
"""What a worker loads for a call of each runtime, put back on disk (True if written)."""

_repairs: StartWait[float] = StartWait("bastion-cache-repair")


def _restore(runtime: str, entry: Path) -> float:
    """Restore the artifact; the monotonic time it was done (workers started later see it)."""
    restorer = RESTORERS.get(runtime)
    if restorer is None:
        raise ExecutionError(ErrorCode.INTERNAL, f"no cache repair for runtime {runtime!r}")
    started = time.monotonic()
    try:
        wrote = restorer(entry)
    except OSError as exc:
        raise ExecutionError(
            ErrorCode.NOT_READY,
            f"the compile cache cannot be repaired ({exc.strerror or type(exc).__name__}); "
            "the skill can run once it can be written",
            detail=f"{entry}: {exc}",
            retry_after_s=5.0,
        ) from None
    _log.warning(
        "cache.repaired",
        runtime=runtime,
        wrote=wrote,
        seconds=round(time.monotonic() - started, 3),
    )
    return time.monotonic()


def repair(pool: Any, runtime: str, entry: Path, miss: CacheMissError) -> int:
    """Repair what ``miss`` reported for a call of ``runtime`` at ``entry`` and recycle the
    workers that started before; returns how many were recycled. Raises ``NOT_READY`` past
    the start-up wait and ``CacheDirError`` for a folder that cannot be trusted."""
    _log.warning("cache.worker_miss", runtime=runtime, kind=miss.kind, reason=miss.reason[:200])
    # The runner serves every Python skill: one repair for all of them.
    key = (runtime,) if runtime == "python" else (runtime, str(entry))
    done_at = _repairs.run(
        key,
        lambda: _restore(runtime, entry),
        what="repairing the compile cache for the sandbox workers",
    )
    return int(pool.recycle(spawned_before=done_at))


def load_in_worker(
    worker: Any, runtime: str, entry: Path, wait: float, cancel: threading.Event | None
) -> None:
    """Have an idle worker load ``entry`` for ``runtime`` before its first call there.

    Raises ``CacheMissError`` (the worker lacks a verified artifact), ``TimeoutError`` (no
    answer within ``wait`` seconds), ``ExecutionError(CANCELLED)``, or what reading a dead
    worker raises (``EOFError``, ``FrameError``, ``OSError``)."""
    item = (runtime, str(entry))
    if item in worker.loaded:
        return
    head = {"t": "prepare", "runtime": runtime, "entry": str(entry), "ack": True}
    worker.sock.sendall(encode_frame(head))
    end = time.monotonic() + wait
    while True:
        if cancel is not None and cancel.is_set():
            raise ExecutionError(ErrorCode.CANCELLED, "the caller cancelled the call before it ran")
        left = end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"worker {worker.pid} did not load {entry.name!r} in {wait:g} s")
        frame = worker.reader.read(min(left, _POLL_S) if cancel is not None else left)
        if frame is None or frame.kind != "prepared" or frame.header.get("entry") != str(entry):
            continue  # a worker sends nothing else between calls; a late answer is skipped
        miss = frame.header.get("miss")
        if isinstance(miss, list) and len(miss) == 3:
            raise CacheMissError(*(str(x)[:2000] for x in miss))
        worker.loaded.add(item)
        return


def answer_prepare(
    header: Mapping[str, Any], executors: Mapping[str, Any], send: Callable[[dict[str, Any]], None]
) -> None:
    """The worker's side of a ``prepare`` frame: load the entry from the cache; answer
    ``prepared`` (with the miss, if the cache lacked it) when the kernel asked for an answer.
    Other failures are left to the call, which reports them with its own error."""
    runtime, entry = str(header.get("runtime")), str(header.get("entry"))
    miss: list[str] | None = None
    ex = executors.get(runtime)
    if ex is not None:
        try:
            ex.prepare(Path(entry))
        except CacheMissError as exc:
            miss = [exc.kind, exc.key, exc.reason]
        except Exception:  # the call reports it with its own error
            pass
    if header.get("ack"):
        send({"t": "prepared", "entry": entry, "miss": miss})
