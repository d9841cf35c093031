"""A worker process: ``python -I -m bastion.sandbox.workers.entry FD``.

Start-up, in order: close every descriptor but the socket ``FD`` and 0-2 (``/dev/null``;
stderr is a pipe the kernel reads for crash reports), read the *hello* frame (cache directory,
descriptor limit, the paths Landlock keeps), empty the environment, create the engine and the
three sandbox executors and load the runner (before the hello for a worker started with
``--cache``, see ``serve``), load what ``preload`` names from the verified cache, import the
extension modules a call may need later (Landlock would refuse their shared libraries; a
worker its pool started imports the HTTP stack too, an early one leaves it to the first call
that makes a request), apply the OS
limits (``oslimits.py``), then answer *ready* with what took effect. Then,
one call at a time: rebuild the request, run it, answer with the output bytes or the error,
drop the used store (resetting its kept-resident memory, 1-1.5 ms), prewarm the next call's
instance in the slot that freed, and say *idle*: the pool prefers a worker that said so, and
grows to its size when calls come faster than one worker says it (``pool.py``), so calls in a
row alternate between workers. Dropping on the call thread, before the prewarm, cost 0.5 ms
less CPU per call than on a thread of its own (no GIL hand-off; the prewarm reuses the memory
the reset just wrote). A pool of one worker on several CPUs (``drop_aside`` in the hello) still
drops on the *dropper* thread beside the prewarm: its next call would wait for both in a row.
Log lines and audit records made during a call (``bastion.log``, the HTTP audit of
``hostnet``) go back as frames; the kernel binds and redacts them as for its own.

``serve(..., extra=...)`` lets a test entry add a runtime of its own (the attack hook); the
entry run by the pool has none, so nothing a guest sends reaches such code.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import queue
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from bastion.logs import InvocationLog, discard_unconfigured

from .framing import Frame, FrameStream, encode_frame, read_frame_blocking

__all__ = ["PipeLogger", "main", "serve"]

Handler = Callable[[Any], bytes]
_MAX_FD: Final[int] = 65536
_LEVELS: Final[frozenset[str]] = frozenset({"debug", "info", "warning", "error", "critical"})


class _Channel:
    """The worker's end of the socket: blocking reads, whole-frame writes."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.sock = socket.socket(fileno=fd)

    def send(self, header: dict[str, Any], blob: bytes = b"") -> None:
        self.sock.sendall(encode_frame(header, blob))

    def recv(self) -> Frame:
        """Exactly one frame, nothing past it (the hello: a worker may start again after it)."""
        return read_frame_blocking(self.fd)


class PipeLogger:
    """A structlog-shaped logger whose lines go to the kernel as ``log`` frames."""

    def __init__(self, channel: _Channel, call_id: int, min_level: int = 0) -> None:
        self._ch = channel
        self._id = call_id
        self._min_level = min_level

    def is_enabled_for(self, level: int) -> bool:
        """Whether the kernel writes lines of ``level`` (lines it would drop are not sent)."""
        return level >= self._min_level

    def bind(self, **_kw: Any) -> PipeLogger:
        return self  # the kernel's logger is already bound with skill and invocation id

    def _emit(self, level: str, event: str, **fields: Any) -> None:
        self._ch.send({"t": "log", "id": self._id, "level": level, "event": event, "f": fields})

    def __getattr__(self, level: str) -> Callable[..., None]:
        if level not in _LEVELS and level != "exception":
            raise AttributeError(level)
        name = "error" if level == "exception" else level

        def log(event: str, *_a: Any, **fields: Any) -> None:
            self._emit(name, event, **fields)

        return log


def _close_inherited(keep: int) -> None:
    os.closerange(3, keep)
    os.closerange(keep + 1, _MAX_FD)


def _load(preload: list[list[str]], executors: Mapping[str, Any]) -> None:
    for runtime, entry in preload:
        ex = executors.get(runtime)
        if ex is not None:
            with contextlib.suppress(Exception):  # the call reports it with its own error
                ex.prepare(Path(entry))


def _import_everything() -> None:
    """Modules every call may need, imported now (before Landlock and seccomp).

    The HTTP stack (``hostnet``: httpx and httpcore, ~45 ms, and the TLS context, ~20 ms) is
    imported at start by a worker its pool started (``_import_http_stack``), and by an early
    worker's first call that makes a request: its Python files are in
    the installation and Bastion's own folders, which Landlock keeps readable
    (``oslimits.python_read_paths``; the trust stores are in ``SYSTEM_READ_PATHS``). Only the
    extension modules it loads are imported here, as the shared libraries they link
    (libssl, libuuid) are outside those paths. ``datetime`` and ``random`` (``_datetime``,
    ``_random``, ``_sha512``) are the HTTP stack's too: nothing else of the start imports them."""
    import datetime  # noqa: F401  (_datetime)
    import encodings.idna  # noqa: F401  (host names)
    import random  # noqa: F401  (_random, _sha512)
    import ssl  # noqa: F401  (_ssl links libssl)
    import uuid  # noqa: F401  (_uuid links libuuid)

    from bastion.sandbox import hostabi, hostlink, netguard  # noqa: F401


def _import_http_stack() -> None:
    """The HTTP stack and its TLS context, made at start by a worker its pool started: no
    call's deadline then pays the ~65 ms. A worker started ahead of ``bastion run``'s pool
    (``--cache``) skips it: the one call it serves most often makes no request."""
    from bastion.sandbox import hostnet

    hostnet.default_tls_context()


def _explained(exc: Any) -> Any:
    """A failed call's error, or the file-limit error if the guest left the descriptor table
    full (its store, and so its files, are dropped only after the answer)."""
    from .. import fdlimit

    if fdlimit.explains(exc) and fdlimit.table_full():
        return fdlimit.files_error(exc)
    return exc


def _files_error(exc: Any) -> Any:
    from .. import fdlimit

    return fdlimit.files_error(exc)


def _import_early() -> None:
    """Import the engine, executors and call-time modules before the hello frame: none needs
    it, and a worker started ahead of its pool (``prespawn``) does this while the kernel is
    still importing and discovering. Creating the engine and loading modules waits for the
    hello (engine settings, cache location)."""
    from .. import component_exec, engine, python_exec, runner_build, wasi_module  # noqa: F401
    from . import oslimits, wire  # noqa: F401

    _import_everything()


EARLY_CACHE: Final[str] = "--cache"
"""``entry FD --cache DIR``: a worker started ahead of its pool (``prespawn``) is told the cache
the kernel will name, and loads the runner from it before the hello (see ``serve``)."""
_GIVEN_HELLO: Final[str] = "--hello-fd"
"""``entry FD --hello-fd N``: the hello an early worker read before it started again, in an
anonymous file (never on the command line, which other processes of the user can read)."""
_MAX_GIVEN_HELLO: Final[int] = 64 * 2**20
_EARLY_POOLING: Final[bool] = True
"""The engine an early worker guesses: the pooling allocator, as for the default policy."""


def _option(args: list[str], name: str) -> str | None:
    rest = args[2:]
    for i in range(0, len(rest) - 1, 2):
        if rest[i] == name:
            return rest[i + 1]
    return None


def _prefaulting() -> bool:
    from .. import engine

    return engine.prefaulting()


def _wants_pooling(cfg: Mapping[str, Any]) -> bool:
    from .. import engine

    slot = engine.engine_settings().memory_reservation
    return bool(cfg.get("pooling")) and int(cfg.get("max_memory_mb", 0)) * 2**20 <= slot


def _engine_and_executors(cache: str, pooling: bool) -> dict[str, Any]:
    """What the cache location and the engine settings decide: the engine, the executors,
    and the Python runner loaded (verified and mapped) from the cache."""
    from bastion.cachedir import CACHE_ENV

    os.environ[CACHE_ENV] = cache
    from .. import engine
    from ..cache import use_load_only
    from ..component_exec import ComponentExecutor
    from ..python_exec import PythonExecutor
    from ..runner_build import built_runner
    from ..wasi_module import WasiModuleExecutor

    use_load_only()  # a worker never compiles or writes the cache; the kernel repairs it
    if pooling:
        engine.configure_engine(pooling=True)
    engine.get_engine()
    engine.engine_fingerprint()  # reads wasmtime's dist-info now, before the OS limits
    executors: dict[str, Any] = {
        "wasm": WasiModuleExecutor(),
        "component": ComponentExecutor(),
        "python": PythonExecutor(),
    }
    if built_runner() is not None:
        with contextlib.suppress(Exception):  # a cache miss is reported on the first call
            executors["python"].load()
    if _START_WITHOUT_GC:  # ``main``: what start-up built lives until exit; collections skip it
        gc.freeze()
        gc.enable()
    return executors


def _restart(args: list[str], cfg: Mapping[str, Any]) -> None:
    """Start this worker again (same process, same socket) with the hello it has read: an
    early worker whose guess (cache, engine) the hello contradicts cannot change its engine."""
    tail = args[1:]
    orig = list(sys.orig_argv)
    if orig[len(orig) - len(tail) :] != tail:
        raise RuntimeError("the worker cannot restart itself: its command line is unknown")
    head = orig[: len(orig) - len(tail)]
    import tempfile

    held = tempfile.TemporaryFile()  # noqa: SIM115  (kept open across the exec on purpose)
    held.write(json.dumps(dict(cfg)).encode("utf-8"))
    held.flush()
    held.seek(0)
    os.set_inheritable(held.fileno(), True)
    os.execv(sys.executable, [*head, args[1], _GIVEN_HELLO, str(held.fileno())])


def _read_given(number: str) -> bytes:
    """The hello ``_restart`` left in descriptor ``number`` (then closed)."""
    with os.fdopen(int(number), "rb") as f:
        return f.read(_MAX_GIVEN_HELLO)


def serve(argv: list[str] | None = None, *, extra: Mapping[str, Handler] | None = None) -> int:
    """Run the worker on the socket named by ``argv[1]`` until the kernel closes it.

    A worker started with ``--cache DIR`` (``prespawn``) does not wait for the hello to create
    its engine and load the runner: the ~50 ms of verifying and mapping it then overlap the
    kernel's discovery too. If the hello names another cache, or an engine without the pooling
    allocator, the worker starts again with that hello (``os.execv``, before any limit is
    applied): a wrong guess costs time, never a setting."""
    args = sys.argv if argv is None else argv
    fd = int(args[1])
    given_fd = _option(args, _GIVEN_HELLO)
    given = _read_given(given_fd) if given_fd is not None else None  # before the closing below
    _close_inherited(fd)
    discard_unconfigured()  # module loggers' lines would go to stdout: /dev/null here
    started = time.monotonic()
    ch = _Channel(fd)
    _import_early()
    early = _option(args, EARLY_CACHE)
    executors: dict[str, Any] | None = None
    if early is not None and given is None:
        executors = _engine_and_executors(early, _EARLY_POOLING)
    if given is not None:
        cfg: Mapping[str, Any] = json.loads(given)
    else:
        try:
            hello = ch.recv()
        except (EOFError, OSError):
            return 0
        cfg = hello.header
    os.environ.clear()
    pooling = _wants_pooling(cfg)
    if executors is not None and (str(cfg["cache"]) != early or pooling != _EARLY_POOLING):
        _restart(args, cfg)
    if executors is None:
        executors = _engine_and_executors(str(cfg["cache"]), pooling)
    from bastion.cachedir import CACHE_ENV
    from bastion.errors import ErrorCode, ExecutionError

    from . import oslimits
    from .derive import DESCRIBE_RUNTIME, describe_handler
    from .repair import answer_prepare
    from .wire import encode_error, request_from_call

    os.environ[CACHE_ENV] = str(cfg["cache"])
    if early is None:
        _import_http_stack()
    _load(list(cfg.get("preload", [])), executors)
    read = [str(cfg["cache"]), *oslimits.python_read_paths(), *oslimits.SYSTEM_READ_PATHS]
    read += [str(p) for p in cfg.get("read", [])]
    report = oslimits.apply(
        max_open_files=int(cfg["max_open_files"]),
        read=read,
        write=[str(p) for p in cfg.get("write", [])],
        landlock_on=bool(cfg.get("landlock", True)),
        seccomp_on=bool(cfg.get("seccomp", True)),
    )
    handlers: dict[str, Handler] = dict(extra or {})
    handlers.setdefault(DESCRIBE_RUNTIME, describe_handler)  # discovery's schema derivations
    ch.send(
        {
            "t": "ready",
            "pid": os.getpid(),
            "start_ms": round((time.monotonic() - started) * 1000, 3),
            "limits": report,
            "pooling": pooling,
            "prefault": _prefaulting(),
        }
    )
    dropper = _Dropper() if cfg.get("drop_aside") else None
    frames = FrameStream(fd)  # from here on the loop owns the stream: one read per frame
    while True:
        try:
            frame = frames.read()
        except (EOFError, OSError):
            return 0
        if frame.kind == "prepare":
            answer_prepare(frame.header, executors, ch.send)
            continue
        if frame.kind != "call":
            continue
        call_id = int(frame.header.get("id", 0))
        cpu = [time.thread_time_ns()]  # this thread's CPU at each phase's end: see IDLE_PHASES
        if dropper is not None:
            dropper.settle()  # the previous guest's files are closed before this one runs
        after: list[Callable[[], None]] = []
        request: Any = None
        # Host lines the call causes are capped here, where they happen (a skill looping over
        # log() must not flood the pipe); the summary of what was cut goes before the answer.
        # The kernel's own InvocationLog then redacts what arrives.
        calllog = InvocationLog(PipeLogger(ch, call_id, int(frame.header.get("log_level", 0))))
        try:

            def audit(event: str, fields: Mapping[str, Any], _id: int = call_id) -> None:
                ch.send({"t": "audit", "id": _id, "event": event, "f": dict(fields)})

            request = request_from_call(
                frame.header,
                frame.blob.decode("utf-8"),
                logger=calllog,
                audit=audit,
            )
            runtime = request.runtime
            cpu.append(time.thread_time_ns())
            handler = handlers.get(runtime)
            if handler is not None:
                out = handler(request)
            else:
                ex = executors.get(runtime)
                if ex is None:
                    raise ExecutionError(
                        ErrorCode.INTERNAL, f"no executor for runtime {runtime!r} in the worker"
                    )
                if hasattr(ex, "prewarm"):
                    out = ex.execute(request, after=after)
                else:
                    out = ex.execute(request)
            header, blob = {"t": "result", "id": call_id}, bytes(out)
        except ExecutionError as exc:
            header, blob = encode_error(call_id, _explained(exc)), b""
        except OSError as exc:
            if exc.errno == 24:  # EMFILE: the worker's own descriptor table is full
                err = _files_error(
                    ExecutionError(
                        ErrorCode.INTERNAL,
                        "the worker ran out of file descriptors",
                        detail=traceback.format_exc(limit=5)[-4000:],
                    )
                )
            else:
                err = ExecutionError(
                    ErrorCode.INTERNAL,
                    "the worker failed to run the skill",
                    detail=traceback.format_exc(limit=5)[-4000:],
                )
            header, blob = encode_error(call_id, err), b""
        except Exception:
            err = ExecutionError(
                ErrorCode.INTERNAL,
                "the worker failed to run the skill",
                detail=traceback.format_exc(limit=5)[-4000:],
            )
            header, blob = encode_error(call_id, _explained(err)), b""
        if len(cpu) == 1:  # the rebuild failed: no execution
            cpu.append(cpu[0])
        cpu.append(time.thread_time_ns())
        calllog.finish()
        ch.send(_settle(header, request, after, executors), blob)
        cpu.append(time.thread_time_ns())
        # The used store is dropped before the next instance is made: the slot it frees (and
        # the memory the reset just wrote, still in cache) is what the prewarm takes next.
        # On this thread, unless this worker is the pool's only one (then the next call would
        # wait behind the drop; the dropper thread does it beside the prewarm).
        for drop in after:
            if dropper is None:
                with contextlib.suppress(Exception):
                    drop()
            else:
                dropper.put(drop)
        cpu.append(time.thread_time_ns())
        ex = executors.get(request.runtime) if request is not None else None
        if ex is None or not hasattr(ex, "prewarm"):
            continue  # nothing was left to do: the answer said idle
        with contextlib.suppress(Exception):
            ex.prewarm(request)
        cpu.append(time.thread_time_ns())
        spent = [cpu[i + 1] - cpu[i] for i in range(len(cpu) - 1)]
        ch.send({"t": "idle", "id": call_id, "cpu_ns": spent})


def _settle(
    header: dict[str, Any], request: Any, after: list[Callable[[], None]],
    executors: Mapping[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """``header`` marked ``idle`` when no after-call work follows (no store to drop, nothing
    to prewarm: a WASI module, a failed rebuild): the pool may send the next call at once
    instead of taking another worker because no separate *idle* frame came yet."""
    ex = executors.get(request.runtime) if request is not None else None
    if not after and not hasattr(ex, "prewarm"):
        header["idle"] = True
    return header


class _Dropper:
    """One daemon thread that drops used stores while the worker prewarms. At most one waits
    at once (each holds a slot of the pooling allocator): every call settles the drop
    before it runs, so no backlog can build."""

    def __init__(self) -> None:
        self._q: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._pending = 0
        self._done = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="bastion-dropper", daemon=True)
        self._thread.start()

    def put(self, drop: Callable[[], None]) -> None:
        with self._done:
            self._pending += 1
        self._q.put(drop)

    def settle(self) -> None:
        """Wait until every store handed over is dropped: until then it holds its guest's open
        files, and the next call must not be refused for another call's descriptors."""
        with self._done:
            self._done.wait_for(lambda: self._pending == 0)

    def _run(self) -> None:
        from ..ticker import name_os_thread

        name_os_thread("bastion-dropper")
        while True:
            drop = self._q.get()
            try:
                with contextlib.suppress(Exception):
                    drop()
            finally:
                with self._done:
                    self._pending -= 1
                    self._done.notify_all()


_START_WITHOUT_GC: list[bool] = []
"""Set by ``main``: the cyclic GC is off until the engine and runner are loaded."""


def main() -> int:
    """Entry point of ``python -m bastion.sandbox.workers.entry FD``.

    Start-up (imports, engine, runner) runs without the cyclic GC, as the CLI's does
    (``bastion.cli._startup``): its tens of thousands of long-lived objects would be walked
    by collection after collection; ``_engine_and_executors`` freezes them and turns it on."""
    gc.disable()
    _START_WITHOUT_GC.append(True)
    return serve()


if __name__ == "__main__":
    sys.exit(main())
