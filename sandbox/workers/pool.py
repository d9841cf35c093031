"""The kernel's side: a pool of worker processes, hard deadlines, cancellation and crashes.

``WorkerPool.run(request)`` takes an idle worker (starting one if fewer than ``count`` are
alive, else waiting), sends the call and reads frames until the answer. It never waits past
the call's deadline plus ``grace``: a worker that has not answered by then is SIGKILLed,
reaped and replaced, and the call is ``TIMEOUT`` whatever the guest was doing (computing,
sleeping in WASI, blocked in a host call). A set ``request.cancel`` ends the call the same
way with ``CANCELLED``. A worker that dies by itself (a wasmtime panic, a segfault, the OOM
killer) or breaks the framing is ``SKILL_CRASHED`` for its call, recorded in the audit log
(event ``worker``) and the pool's counters, and replaced; the kernel never goes down with it.

Workers start lazily: ``bastion run`` starts one; a busy server grows to ``count``, and so do
calls in a row that find no worker with its next instance ready (``_grow_locked``). Time spent
waiting for a worker to *start* is not charged to the call (it is the host's cost).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, final

from bastion.closing import Closeable
from bastion.errors import ErrorCode, ExecutionError
from bastion.executor import ExecutionRequest
from bastion.logs import get_logger

from ..cache import CacheMissError
from ..startwait import wait_s
from . import prespawn
from .framing import MAX_BLOB, FrameError, FrameReader, encode_frame
from .launcher import Launcher
from .prespawn import DEFAULT_ENTRY
from .procstate import is_running
from .repair import load_in_worker
from .wire import IDLE_PHASES, decode_error, encode_call

__all__ = ["DEFAULT_ENTRY", "PoolStats", "WorkerPool", "WorkerSettings", "call_log_level"]

_log = get_logger("bastion.sandbox.workers")
_CANCEL_POLL_S: Final[float] = 0.01
_LOOK_AFTER_S: Final[float] = 0.001
"""Without a busy host thread, the worker is looked at this long after the deadline: its own
epoch tick lands at the deadline, and a spinning guest's thread waits a moment for its worker's
GIL there (which would look like a blocked worker)."""
_ANSWER_SPIN_S: Final[float] = 0.003
"""How long the caller's thread waits, GIL kept, for the answer of a worker seen running guest
code at its deadline (the epoch stops it and the answer comes ~1.5 ms later); then it sleeps."""
_SPIN_MAX_S: Final[float] = 0.001
"""The longest the caller's thread waits for the deadline holding the GIL (after a wake-up that
came back just before it): a sleep would cost a switch interval behind a busy thread."""
_CPUS: Final[int] = max(os.cpu_count() or 1, 1)
"""CPUs of the machine, read once (``os.cpu_count`` reads ``/sys`` each time: three system
calls on every call that finds no warm worker)."""
_MAX_FRAMES_PER_CALL: Final[int] = 20_000
_MAX_PHASE_NS: Final[int] = 10**12
_STDERR_TAIL: Final[int] = 4096


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How the pool runs workers (from the policy's ``[workers]`` section)."""

    count: int = 0
    """Most workers alive at once; 0 means one per CPU."""
    grace_ms: int = 25
    """After the deadline, how long a worker seen running guest code may take to answer
    before it is killed; one seen blocked is killed at once (``_converse``)."""
    max_open_files: int = 256
    start_timeout_s: float = 60.0
    landlock: bool = True
    seccomp: bool = True
    read_paths: tuple[str, ...] = ()
    """Extra read-only paths Landlock keeps (the policy's read-only mounts)."""
    write_paths: tuple[str, ...] = ()
    """Paths Landlock keeps writable (the policy's writable mounts)."""
    pooling: bool = True
    """Workers use wasmtime's pooling allocator with keep-resident memory, unless a skill may
    get more memory (``max_memory_mb``) than a pooled slot holds."""
    max_memory_mb: int = 512
    """The largest memory cap in the policy (global or per skill)."""
    entry: tuple[str, ...] = DEFAULT_ENTRY
    """Interpreter arguments that start a worker (tests point this at an attack entry)."""

    @property
    def size(self) -> int:
        return self.count if self.count > 0 else _CPUS


@dataclass(slots=True)
class PoolStats:
    """Counters since the pool started (metrics and ``bastion doctor``)."""

    started: int = 0
    calls: int = 0
    timeouts_killed: int = 0
    cancelled_killed: int = 0
    crashed: int = 0
    recycled: int = 0
    """Workers replaced because the compile cache was repaired under them."""
    start_ms: list[float] = field(default_factory=list)
    phase_cpu_ns: list[int] = field(default_factory=lambda: [0] * len(IDLE_PHASES))
    """CPU nanoseconds the workers' call loops spent per phase (``wire.IDLE_PHASES``), summed
    over the ``phase_calls`` calls whose *idle* frame reported them: where a call's CPU goes."""
    phase_calls: int = 0

    def add_phases(self, cpu: Any) -> None:
        """Count one *idle* frame's ``cpu_ns`` (a worker's word: anything else is ignored)."""
        if (
            isinstance(cpu, list)
            and len(cpu) == len(IDLE_PHASES)
            and all(type(x) is int and 0 <= x < _MAX_PHASE_NS for x in cpu)
        ):
            self.phase_cpu_ns = [a + b for a, b in zip(self.phase_cpu_ns, cpu, strict=True)]
            self.phase_calls += 1


class _Worker:
    """One worker process and its socket."""

    def __init__(self, proc: subprocess.Popen[bytes], sock: socket.socket, spawned: float) -> None:
        self.proc = proc
        self.sock = sock
        self.reader = FrameReader(sock.fileno(), max_blob=MAX_BLOB)
        self.stderr_tail = b""
        """The last bytes the worker wrote to its stderr (a wasmtime panic, a fatal error)."""
        err = proc.stderr
        self._stderr_fd = err.fileno() if err is not None else -1
        if self._stderr_fd >= 0:
            os.set_blocking(self._stderr_fd, False)
        self.spawned = spawned
        self.ready: dict[str, Any] | None = None
        self.calls = 0
        self.settled = True
        """False while a call is in flight and not yet answered, killed or found dead."""
        self.warm = True
        """False from an answer until the worker says ``idle`` (its next instance is made)."""
        self.owned = False
        """True while a thread (a caller, a replacement helper) holds this worker out of the
        idle list: that thread, not ``close()``, reaps it and closes its socket."""
        self.loaded: set[tuple[str, str]] = set()
        """(runtime, entry) pairs this worker confirmed loaded (``repair.load_in_worker``)."""

    def drain_stderr(self) -> None:
        """Read what the worker wrote to stderr so far (never blocks; keeps the tail), so the
        pipe cannot fill and stall the worker."""
        if self._stderr_fd < 0:
            return
        while True:
            try:
                chunk = os.read(self._stderr_fd, 65536)
            except (BlockingIOError, OSError):
                return
            if not chunk:
                return
            self.stderr_tail = (self.stderr_tail + chunk)[-_STDERR_TAIL:]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal_kill(self) -> None:
        """SIGKILL without waiting: the guest stops now; ``kill()`` later reaps it.

        ``os.kill`` directly, not ``Popen.send_signal`` (which first polls with ``waitpid``,
        releasing the GIL: behind a busy host thread, a switch interval on the deadline path).
        The pid cannot have been reused: only this pool reaps its workers."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)

    def kill(self) -> int | None:
        """SIGKILL, reap (no zombie), close the socket; returns the exit status."""
        self.signal_kill()
        try:
            status = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - the kernel failed to kill
            status = None
        self._close()
        return status

    def _close(self) -> None:
        self.drain_stderr()
        self.sock.close()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
            self._stderr_fd = -1

    def reap(self) -> int | None:
        """The exit status of a worker that closed its end (waits briefly, then kills)."""
        try:
            status: int | None = self.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return self.kill()
        self._close()
        return status


def _describe(status: int | None) -> str:
    if status is None:
        return "unknown status"
    if status < 0:
        try:
            return f"signal {signal.Signals(-status).name}"
        except ValueError:
            return f"signal {-status}"
    return f"exit status {status}"


def _kill_all(workers: list[_Worker]) -> None:
    for w in list(workers):
        with contextlib.suppress(Exception):
            w.kill()
    workers.clear()


@final
class WorkerPool(Closeable):
    """Worker processes for sandboxed calls; thread-safe, one call per worker at a time."""

    def __init__(self, settings: WorkerSettings, *, cache_root: Path) -> None:
        self.settings = settings
        self.cache_root = cache_root
        self.stats = PoolStats()
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._all: list[_Worker] = []
        self._preload: list[list[str]] = []
        self._ids = 0
        self._replacing = 0
        self._helpers: list[threading.Thread] = []
        self._recycle_before = 0.0
        """Workers spawned before this (monotonic) time are replaced, not used (``recycle``)."""
        self._launcher = Launcher()
        self._closed = False
        self._finalizer = weakref.finalize(self, _kill_all, self._all)

    # -- workers ---------------------------------------------------------------------------

    def _spawn_locked(self) -> _Worker:
        proc, parent, spawned = prespawn.take(self.settings.entry) or prespawn.spawn(
            self.settings.entry
        )
        w = _Worker(proc, parent, spawned)
        self._launcher.ensure_started()  # before any call can time out (see launcher.py)
        s = self.settings
        hello = {
            "t": "hello",
            "cache": str(self.cache_root),
            "max_open_files": s.max_open_files,
            "landlock": s.landlock,
            "seccomp": s.seccomp,
            "pooling": s.pooling,
            "max_memory_mb": s.max_memory_mb,
            "read": list(s.read_paths),
            "write": list(s.write_paths),
            "preload": list(self._preload),
            # A pool of one worker on several CPUs: the worker drops a used store on a thread
            # of its own while it prewarms (the next call would wait for both in a row);
            # otherwise the other workers serve meanwhile and one thread does both.
            "drop_aside": s.size == 1 and _CPUS > 1,
        }
        parent.sendall(encode_frame(hello))
        self._all.append(w)
        self.stats.started += 1
        return w

    def _await_ready(self, w: _Worker) -> None:
        end = time.monotonic() + self.settings.start_timeout_s
        while w.ready is None:
            try:
                frame = w.reader.read(max(end - time.monotonic(), 0.0))
            except (EOFError, FrameError, OSError) as exc:
                status = w.reap()
                self._forget(w)
                raise ExecutionError(
                    ErrorCode.INTERNAL,
                    "a sandbox worker failed to start",
                    detail=f"worker {w.pid}: {_describe(status)} ({exc})",
                ) from None
            if frame is None:
                w.kill()
                self._forget(w)
                raise ExecutionError(
                    ErrorCode.INTERNAL,
                    f"a sandbox worker did not start within {self.settings.start_timeout_s} s",
                )
            if frame.kind == "ready":
                w.ready = frame.header
                ms = round((time.monotonic() - w.spawned) * 1000, 3)
                self.stats.start_ms.append(ms)
                del self.stats.start_ms[:-100]
                _log.debug("worker.ready", pid=w.pid, ms=ms, limits=frame.header.get("limits"))

    def _forget(self, w: _Worker) -> None:
        with self._cond:
            if w in self._all:
                self._all.remove(w)
            if w in self._idle:
                self._idle.remove(w)
            self._cond.notify()

    def _replace(self, w: _Worker, *, reap: bool = False) -> None:
        """Drop a dead or killed worker and start its replacement on a helper thread, so the
        failed call returns at once; the new worker readies while the pool serves others.
        With ``reap``, the helper also reaps the old one (tearing down a large address space
        takes a while, and the caller need not wait for it)."""
        with self._cond:
            if w in self._all:
                self._all.remove(w)
            self._replacing += 1
            self._cond.notify()
        self._launcher.submit(self._spawn_helper, w if reap else None)

    def _spawn_helper(self, old: _Worker | None) -> None:
        """On the launcher thread: start the thread that reaps ``old`` and readies a new one."""
        t = threading.Thread(
            target=self._start_replacement, args=(old,), name="bastion-worker-spawn"
        )
        with self._cond:
            self._helpers = [h for h in self._helpers if h.is_alive()]
            self._helpers.append(t)
        t.start()

    def _start_replacement(self, old: _Worker | None = None) -> None:
        if old is not None:
            old.kill()
        w: _Worker | None = None
        try:
            with self._cond:
                if not self._closed and len(self._all) < self.settings.size:
                    w = self._spawn_locked()
                    w.owned = True
            if w is not None:
                self._await_ready(w)
                with self._cond:
                    closed = self._closed
                    if not closed:
                        w.owned = False
                        self._idle.append(w)
                if closed:
                    w.kill()
        except (OSError, ExecutionError) as exc:
            if not self._closed:
                _log.error("worker.replace_failed", error=str(exc)[:200])
        finally:
            with self._cond:
                self._replacing -= 1
                self._cond.notify_all()

    def _acquire(self, request: ExecutionRequest) -> tuple[_Worker, float]:
        """An idle (or new) ready worker, and the seconds spent getting it: waiting for a
        worker to start or to come free is the host's time, not the skill's."""
        t0 = time.monotonic()
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        raise ExecutionError(ErrorCode.INTERNAL, "the worker pool is closed")
                    if self._idle:
                        # A ready worker first; one still starting only if none is ready.
                        ready = [x for x in self._idle if x.ready is not None]
                        w = _pick(ready, self.stats) if ready else self._idle[-1]
                        self._idle.remove(w)
                        w.owned = True
                        if not w.warm:
                            self._grow_locked()
                        break
                    if len(self._all) + self._replacing < self.settings.size:
                        w = self._spawn_locked()
                        w.owned = True
                        break
                    if request.cancel is not None and request.cancel.is_set():
                        raise ExecutionError(
                            ErrorCode.CANCELLED, "the caller cancelled the call before it ran"
                        )
                    self._cond.wait(0.05 if request.cancel is not None else None)
            if w.spawned < self._recycle_before:  # bound to a cache folder since repaired
                w.signal_kill()
                self._replace(w, reap=True)
                continue
            if w.ready is not None:
                return w, time.monotonic() - t0
            try:
                self._await_ready(w)
            except ExecutionError:
                continue
            return w, time.monotonic() - t0

    def _grow_locked(self) -> None:
        """Start one more worker in the background if the pool is below its size: a call
        found no idle worker with its next instance ready (calls come faster than one worker
        finishes its after-call work), so calls in a row alternate between workers and each
        one's prewarm and drop run while the other serves. The call itself does not wait."""
        if self._closed or len(self._all) + self._replacing >= self.settings.size:
            return
        self._replacing += 1
        self._launcher.submit(self._spawn_helper, None)

    def _release(self, w: _Worker, *, idle: bool = False) -> None:
        """Give ``w`` back after its answer; ``idle`` if the answer said no after-call work
        follows (its next call may go to it at once)."""
        w.settled = True
        w.warm = idle
        with self._cond:
            if not self._closed:
                w.owned = False
                self._idle.append(w)
                self._cond.notify()
                return
            if w in self._all:
                self._all.remove(w)
        w.kill()

    # -- calls -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the first worker now if none runs (it readies while the caller works)."""
        with self._cond:
            if not self._all and not self._replacing and not self._closed:
                self._idle.append(self._spawn_locked())

    def prepare(self, runtime: str, entry: Path) -> None:
        """Have workers load ``entry`` (already compiled into the cache by the kernel); a
        worker started later loads it at start-up. Starts the first worker if none runs."""
        item = [runtime, str(entry)]
        with self._cond:
            if item not in self._preload:
                self._preload.append(item)
            if not self._all and not self._closed:
                self._idle.append(self._spawn_locked())
                return
            frame = encode_frame({"t": "prepare", "runtime": runtime, "entry": str(entry)})
            for w in self._idle:
                with contextlib.suppress(OSError):
                    w.sock.sendall(frame)

    def run(self, request: ExecutionRequest) -> bytes:
        """Run one call in a worker; returns the output bytes or raises ``ExecutionError``."""
        if request.cancel is not None and request.cancel.is_set():
            raise ExecutionError(ErrorCode.CANCELLED, "the caller cancelled the call before it ran")
        log_level = call_log_level(request.logger)  # before a worker is taken
        w, waited = self._acquire(request)
        waited += self._load(w, request)
        deadline = request.deadline + waited
        hard = deadline + self.settings.grace_ms / 1000
        with self._cond:
            self._ids += 1
            call_id = self._ids
            self.stats.calls += 1
        w.calls += 1
        w.reader.max_blob = request.limits.output_bytes + 64 * 1024
        blob = request.input_json.encode("utf-8")
        try:
            header = encode_call(call_id, request, deadline)
            header["log_level"] = log_level
            w.sock.sendall(encode_frame(header, blob))
        except OSError:
            return self._crashed(w, request, "the worker's socket was closed")
        w.settled = False
        try:
            return self._converse(w, request, call_id, hard)
        except BaseException:
            if not w.settled:  # e.g. the audit sink raised: the worker is mid-call, end it
                self._end(w, request, "kernel error")
            raise

    def _load(self, w: _Worker, request: ExecutionRequest) -> float:
        """Have ``w`` load the call's entry first (host time, like starting it); the seconds
        spent. A cache miss gives the worker back and raises ``CacheMissError`` for repair."""
        if (request.runtime, str(request.entry)) in w.loaded:
            return 0.0  # confirmed loaded before: nothing to ask (``load_in_worker``)
        t0 = time.monotonic()
        limit = wait_s()
        try:
            load_in_worker(w, request.runtime, request.entry, limit, request.cancel)
        except CacheMissError:
            self._release(w)
            raise
        except (ExecutionError, TimeoutError) as exc:  # cancelled, or loading past the wait
            w.settled = True
            w.signal_kill()
            self._replace(w, reap=True)  # its late answer must not meet a later call
            if isinstance(exc, ExecutionError):
                raise
            raise ExecutionError(
                ErrorCode.NOT_READY,
                f"a sandbox worker is still loading the skill (waited {limit:g} s): retry shortly",
                detail=str(exc),
                retry_after_s=5.0,
            ) from None
        except (EOFError, FrameError, OSError) as exc:
            # Dying while loading is the cache's doing (a mapped file truncated under it is a
            # SIGBUS): repaired and retried like a miss, never charged to the skill.
            w.settled = True
            status = w.kill()
            self._count("crashed")
            self._replace(w)
            why = f"worker {w.pid} died loading it: {_describe(status)} ({exc})"
            raise CacheMissError("entry", str(request.entry.name), why) from None
        return time.monotonic() - t0

    def recycle(self, spawned_before: float | None = None) -> int:
        """Replace every worker started before ``spawned_before`` (default now): idle ones at
        once, busy ones when their call ends. A worker's Landlock rules are bound to the cache
        folder it started with, which a repair may have re-created. Returns how many."""
        cutoff = time.monotonic() if spawned_before is None else spawned_before
        with self._cond:
            before, self._recycle_before = self._recycle_before, max(self._recycle_before, cutoff)
            stale = [w for w in self._idle if w.spawned < cutoff]
            for w in stale:
                self._idle.remove(w)
                w.owned = True
            count = sum(1 for w in self._all if before <= w.spawned < cutoff)
            self.stats.recycled += count
        for w in stale:
            w.signal_kill()
            self._replace(w, reap=True)
        if count:
            _log.info("worker.recycled", count=count)
        return count

    def _converse(self, w: _Worker, request: ExecutionRequest, call_id: int, hard: float) -> bytes:
        """Read the worker's frames for one call until its answer, the deadline or a cancel.

        Just after the deadline the worker is looked at once (``procstate``): running, it is
        executing guest code, which the epoch stops within a millisecond or two, so it has until
        ``hard`` (the grace) to answer; not running (asleep in WASI, blocked in a host call),
        nothing would stop it, so it is killed then and the call is ``TIMEOUT`` at the deadline.
        What has already arrived is always read before a kill.

        Behind a busy host thread, getting the GIL back after any wait costs a switch interval
        (5 ms); so the wait for the look ends a switch interval *before* the deadline, and if
        the GIL came back sooner (no busy thread) the thread sleeps again, cheaply, until just
        after it. The look itself and the reads keep the GIL (``gilheld``)."""
        cancel = request.cancel
        deadline = hard - self.settings.grace_ms / 1000
        wake = deadline - sys.getswitchinterval()
        looked = False
        for _ in range(_MAX_FRAMES_PER_CALL):
            while True:
                if cancel is not None and cancel.is_set():
                    self._count("cancelled_killed")
                    self._end(w, request, "cancelled")
                    raise ExecutionError(
                        ErrorCode.CANCELLED, "the caller cancelled the call; the skill was stopped"
                    )
                wait = (hard if looked else wake) - time.monotonic()
                if cancel is not None:
                    wait = min(wait, _CANCEL_POLL_S)
                try:
                    frame = w.reader.read(max(wait, 0.0))
                    now = time.monotonic()
                    if frame is None and not looked and now >= wake:
                        if now < deadline - _SPIN_MAX_S:
                            wake = deadline + _LOOK_AFTER_S  # the GIL came back early: no rush
                            continue
                        while now < deadline and frame is None:  # under 1 ms, GIL kept
                            frame = w.reader.read_now()
                            now = time.monotonic()
                        frame = frame or w.reader.read_now()
                        if frame is None:
                            looked = True
                            if now >= hard or is_running(w.pid) is False:
                                self._count("timeouts_killed")
                                self._end(w, request, "timeout")
                                raise _timeout(
                                    request, "the worker did not answer by the deadline; killed"
                                )
                            # Running: the epoch's answer is due within a millisecond or two;
                            # waiting for it with the GIL kept spares a switch interval.
                            until = min(now + _ANSWER_SPIN_S, hard)
                            while frame is None and time.monotonic() < until:
                                frame = w.reader.read_now()
                    elif frame is None and now >= hard:
                        frame = w.reader.read_now()  # what arrived while the thread woke
                        if frame is None:
                            self._count("timeouts_killed")
                            self._end(w, request, "timeout")
                            raise _timeout(
                                request, "the worker did not answer within the grace; killed"
                            )
                except EOFError:
                    return self._crashed(w, request, None)
                except (FrameError, OSError) as exc:
                    return self._crashed(w, request, f"bad frame: {exc}")
                if frame is not None:
                    break
            kind, head = frame.kind, frame.header
            if kind == "idle":  # the previous call's after-work ended (this worker was not warm)
                with self._cond:
                    self.stats.add_phases(head.get("cpu_ns"))
                continue
            if kind == "log":
                _forward_log(request, head)
                continue
            if kind == "audit":
                fields = head.get("f")
                if isinstance(fields, dict):
                    request.audit(str(head.get("event", "event"))[:64], fields)
                continue
            if head.get("id") != call_id:
                return self._crashed(w, request, f"answer for another call ({head.get('id')!r})")
            if kind == "result":
                w.drain_stderr()
                self._release(w, idle=head.get("idle") is True)
                return frame.blob
            if kind == "error":
                w.drain_stderr()
                self._release(w, idle=head.get("idle") is True)
                raise decode_error(head)
            return self._crashed(w, request, f"unexpected frame {kind!r}")
        return self._crashed(w, request, "too many frames for one call")

    def _count(self, counter: str) -> None:
        with self._cond:
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)

    def _end(self, w: _Worker, request: ExecutionRequest, why: str) -> None:
        w.settled = True
        w.signal_kill()
        self._replace(w, reap=True)
        _safe_audit(request, {"event": "killed", "reason": why, "pid": w.pid, "signal": "SIGKILL"})

    def _crashed(self, w: _Worker, request: ExecutionRequest, why: str | None) -> bytes:
        w.settled = True
        status = w.kill() if why else w.reap()
        self._count("crashed")
        self._replace(w)
        how = why or _describe(status)
        tail = w.stderr_tail.decode("utf-8", "replace").strip()
        if tail:
            how += f"; stderr: {tail[-2000:]}"
        _safe_audit(request, {"event": "crashed", "pid": w.pid, "status": status, "how": how})
        _log.warning("worker.crashed", pid=w.pid, how=how, skill=request.skill)
        raise ExecutionError(
            ErrorCode.SKILL_CRASHED,
            "the skill's worker process died during the call",
            detail=f"worker {w.pid}: {how}",
        )

    # -- inspection and lifecycle ------------------------------------------------------------

    def pids(self) -> list[int]:
        """Process ids of the live workers."""
        with self._cond:
            return [w.pid for w in self._all]

    def reports(self) -> list[dict[str, Any]]:
        """The ready report (OS limits in effect) of each started worker."""
        with self._cond:
            return [dict(w.ready) for w in self._all if w.ready is not None]

    def close(self) -> None:
        """Kill every worker (each also exits on its own when its socket closes)."""
        with self._cond:
            self._closed = True
            workers = list(self._all)
            helpers = list(self._helpers)
            self._all.clear()
            self._idle.clear()
            self._cond.notify_all()
        # SIGKILL first: a thread polling a worker's socket (a caller, a helper awaiting
        # ready) sees EOF and reaps its own worker; close() reaps and closes only the others,
        # so no socket is closed under a thread still polling its descriptor number.
        for w in workers:
            w.signal_kill()
        self._launcher.stop()  # queued reaps and replacements run (and see the pool closed)
        with self._cond:
            helpers += [h for h in self._helpers if h not in helpers]
        for t in helpers:
            if t is not threading.current_thread():
                t.join(timeout=30)
        for w in workers:
            if not w.owned:
                w.kill()
        self._finalizer.detach()


def _pick(ready: list[_Worker], stats: PoolStats) -> _Worker:
    """The idle worker to take: the most recently released one whose next instance is ready
    (it said ``idle``), else the one released longest ago (the likeliest to be done). Called
    with the pool's lock held (``stats``)."""
    for w in reversed(ready):
        if not w.warm and _said_idle(w, stats):
            w.warm = True
        if w.warm:
            return w
    return ready[0]


def _said_idle(w: _Worker, stats: PoolStats) -> bool:
    """Consume the ``idle`` frame an idle worker sent after its after-call work, if it came:
    one look at what is queued, without waiting (``read_now``: one ``recv``, no new poll
    object, no GIL release on a socket)."""
    try:
        frame = w.reader.read_now()
    except (EOFError, FrameError, OSError, ValueError):
        return False
    if frame is None or frame.kind != "idle":
        return False
    stats.add_phases(frame.header.get("cpu_ns"))
    return True


def _timeout(request: ExecutionRequest, detail: str) -> ExecutionError:
    return ExecutionError(
        ErrorCode.TIMEOUT,
        f"skill exceeded its time limit of {request.limits.timeout_ms} ms",
        detail=detail,
    )


def _safe_audit(request: ExecutionRequest, fields: dict[str, Any]) -> None:
    try:
        request.audit("worker", fields)
    except Exception:
        _log.exception("worker.audit_failed", skill=request.skill)


_LOG_LEVELS: Final[frozenset[str]] = frozenset({"debug", "info", "warning", "error", "critical"})
_DEBUG, _CRITICAL = 10, 50
_ASKED: Final[tuple[int, ...]] = (10, 20, 30, 40)
"""``logging``'s DEBUG, INFO, WARNING and ERROR, the levels ``call_log_level`` asks about."""


def _forward_log(request: ExecutionRequest, head: dict[str, Any]) -> None:
    level = str(head.get("level"))
    fields = head.get("f")
    if level not in _LOG_LEVELS or not isinstance(fields, dict) or request.logger is None:
        return
    kw = {str(k)[:64]: v for k, v in list(fields.items())[:32] if str(k) not in ("event",)}
    getattr(request.logger, level)(str(head.get("event", "skill.log"))[:128], **kw)


def call_log_level(logger: Any) -> int:
    """The lowest level the call's logger writes (a worker counts and forwards only such
    lines, so its per-kind caps match what the kernel would write); all levels if unknown."""
    try:  # a caller's logger is foreign code: whatever it does, the call goes on
        check = getattr(logger, "is_enabled_for", None)
        if check is None:
            return _DEBUG
        for level in _ASKED:
            answer = check(level)
            if not isinstance(answer, bool):
                return _DEBUG  # not a real level check (a duck-typed logger)
            if answer:
                return level
        return _CRITICAL
    except Exception:
        return _DEBUG
