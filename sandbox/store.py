"""A fresh, limited ``Store`` per invocation, with its WASI context and output capture.

``Sandbox`` (a context manager) owns one store and the ``InvocationState`` that host functions,
the output callbacks and the epoch callback share. Set-up, and why:

- ``set_limits`` from ``Limits`` (memory) plus fixed caps on instances, tables and table
  elements, so a module cannot allocate host memory through them;
- the epoch deadline is the ticks of the time *remaining* before ``deadline`` (``_arm``, which
  also books a tick at the deadline itself); when it runs out, an epoch callback checks the
  wall clock and either traps (timeout) or extends the deadline, so a guest never stops before
  its deadline even if the shared ticker ran early, and a spinning guest stops at it;
  when the request carries a ``cancel`` event the deadline is armed ``CANCEL_CHECK_TICKS`` at a
  time and the callback traps (``CANCELLED``) once the event is set;
- ALWAYS a WASI config (a WASI module in a store without one aborts the process): empty env,
  ``argv = [skill name]``, stdin from bytes (raw ``wasi_config_set_stdin_bytes``), stdout and
  stderr through our own C callbacks that keep at most the cap and then refuse writes with EFBIG
  (recording ``output_capped``), without copying what they refuse;
- each mount preopened with ``fs_mutable`` passed explicitly (writable only if
  ``Mount.writable``). wasmtime-py 50 exposes no ``dir_perms``/``file_perms``; ``fs_mutable``
  is the only knob, and read-only is enforced by it (tested by attack).

The output and epoch callbacks are registered with NULL finalizers and ``close()`` unregisters
their entries itself: a Python finalizer makes wasmtime re-take the GIL while it drops the
store, which cost more than the rest of the set-up together.
"""

from __future__ import annotations

import ctypes
import itertools
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

import wasmtime
from wasmtime import _ffi as ffi

from bastion.closing import Closeable
from bastion.errors import ErrorCode, ExecutionError
from bastion.executor import Limits, Mount

from .engine import TICK_MS, get_engine
from .fdlimit import explains, files_error, table_full
from .rawcall import TRAP_PREFIX, context_key
from .ticker import remaining_ms, unwake, wake_at

__all__ = [
    "CANCEL_CHECK_TICKS",
    "STDERR_KEEP",
    "InvocationState",
    "OutputSink",
    "Sandbox",
    "StoreCaps",
    "state_for",
]

STDERR_KEEP: Final[int] = 8 * 1024
"""Bytes of stderr kept (the tail): enough for an error message, bounded host memory."""

_EFBIG: Final[int] = 27  # errno returned to a guest writing past its output cap
_UPDATE_CONTINUE: Final[int] = 0  # WASMTIME_UPDATE_DEADLINE_CONTINUE
CANCEL_CHECK_TICKS: Final[int] = 2
"""Epoch ticks between checks of a request's cancel event (the deadline is armed in chunks this
long while a caller can cancel, so a cancelled guest stops within about two ticks)."""


@dataclass(frozen=True, slots=True)
class StoreCaps:
    """Limits on store objects besides memory; generous for real programs, bounded for abuse."""

    instances: int = 16
    tables: int = 16
    memories: int = 4
    table_elements: int = 200_000


class OutputSink:
    """Collects one output stream up to ``cap`` bytes; ``tail`` keeps only the last ``cap``."""

    def __init__(self, cap: int, *, tail: bool = False) -> None:
        self.cap = cap
        self.tail = tail
        self.buf = bytearray()
        self.capped = False
        """True once the guest tried to write past ``cap`` (head mode only)."""
        self.total = 0

    def write(self, ptr: int, size: int) -> int:
        """Accept ``size`` bytes at host address ``ptr``; returns bytes taken or ``-errno``."""
        self.total += size
        if self.tail:
            self.buf += ctypes.string_at(ptr, min(size, self.cap))
            if len(self.buf) > self.cap:
                del self.buf[: len(self.buf) - self.cap]
            return size
        room = self.cap - len(self.buf)
        if size <= room:
            self.buf += ctypes.string_at(ptr, size)
            return size
        self.capped = True
        if room > 0:
            self.buf += ctypes.string_at(ptr, room)
            return room
        return -_EFBIG


@dataclass(slots=True)
class InvocationState:
    """Per-invocation facts shared by the store's callbacks and host functions."""

    skill: str
    deadline: float
    limits: Limits
    stdout: OutputSink
    stderr: OutputSink
    request: Any = None
    """The ``ExecutionRequest`` (host functions read caps, audit and logger from it)."""
    timed_out: bool = False
    cancelled: bool = False
    files_full: bool = False
    """Set when the store is dropped: the process's descriptor table was full (``fdlimit``)."""
    """Set by the epoch callback when the request's ``cancel`` event stopped the guest."""
    host_error: ExecutionError | None = None
    """Set by a host function that trapped the guest on purpose (the result's error)."""
    last_denial: ExecutionError | None = None
    """The last error a host function returned to the guest (reported if the skill then fails)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Scratch space for host functions (e.g. the pending http response)."""


_STATES: dict[int, InvocationState] = {}
_SINKS: dict[int, OutputSink] = {}
_ids = itertools.count(1)
_reg_lock = threading.Lock()


def state_for(key: int) -> InvocationState | None:
    """The state of the store whose context key is ``key`` (host functions use this)."""
    return _STATES.get(key)


_WRITE_CB_T = ctypes.CFUNCTYPE(
    ctypes.c_ssize_t, ctypes.c_void_p, ctypes.POINTER(ctypes.c_ubyte), ctypes.c_size_t
)
_FREE_CB_T = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_NO_FINALIZER: Final = ctypes.cast(0, _FREE_CB_T)
"""A NULL finalizer: nothing runs while wasmtime drops the store (``Sandbox.close`` unregisters
the sinks itself), so deleting a store calls no Python code."""


def _sink_write_py(data: int | None, buf: Any, size: int) -> int:
    try:
        sink = _SINKS.get(data or 0)
        if sink is None:
            return -_EFBIG
        return sink.write(ctypes.cast(buf, ctypes.c_void_p).value or 0, size)
    except BaseException:
        return -5  # EIO; never raise into wasmtime


_EPOCH_CB_T = ctypes.CFUNCTYPE(
    ctypes.c_size_t,
    ctypes.POINTER(ffi.wasmtime_context_t),
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_uint64),
    ctypes.POINTER(ffi.wasmtime_update_deadline_kind_t),
)


def _epoch_expired_py(ctx: Any, _data: Any, delta: Any, kind: Any) -> int:
    reason = "timeout"
    try:
        state = _STATES.get(context_key(ctx))
        cancel = getattr(state.request, "cancel", None) if state is not None else None
        left = remaining_ms(state.deadline) if state is not None else 0.0
        if cancel is not None and cancel.is_set():
            state.cancelled = True  # type: ignore[union-attr]
            reason, left = "cancelled", 0.0
        if left > 0:
            ticks = _ticks_until(left)
            delta[0] = ticks if cancel is None else min(ticks, CANCEL_CHECK_TICKS)
            kind[0] = _UPDATE_CONTINUE
            return 0
        if state is not None and reason == "timeout":
            state.timed_out = True
    except BaseException:
        pass
    err = ffi.wasmtime_error_new(f"{TRAP_PREFIX}{reason}".encode())
    return ctypes.cast(err, ctypes.c_void_p).value or 0


def _ticks_until(left_ms: float) -> int:
    """Epoch ticks to wait with ``left_ms`` to go: the last one is the final periodic tick
    before the deadline or the deadline's own tick (``ticker.wake_at``), whichever comes
    first. No margin tick is needed: the callback checks the wall clock each time it runs."""
    return max(math.ceil(left_ms / TICK_MS), 1)


def _arm(deadline: float) -> int:
    """Ticks for a store starting its call now (its tick at ``deadline`` is ``Sandbox._book``'s)."""
    return _ticks_until(remaining_ms(deadline))


_sink_write = _WRITE_CB_T(_sink_write_py)
_epoch_expired = _EPOCH_CB_T(_epoch_expired_py)

_ARGV_MEMO_MAX: Final = 1024
_argv_memo: dict[str, Any] = {}
"""Skill name -> its ``argv`` as a C ``char**`` (kept alive here; wasmtime copies it)."""
_NO_ENV: Final = ctypes.cast((ctypes.c_char_p * 1)(), ctypes.POINTER(ctypes.POINTER(ctypes.c_char)))


def _argv(skill: str) -> Any:
    """``[skill]`` as a C string array, built once per skill name (bounded memo)."""
    argv = _argv_memo.get(skill)
    if argv is None:
        argv = ctypes.cast(
            (ctypes.c_char_p * 1)(skill.encode("utf-8")),
            ctypes.POINTER(ctypes.POINTER(ctypes.c_char)),
        )
        if len(_argv_memo) >= _ARGV_MEMO_MAX:
            _argv_memo.clear()
        _argv_memo[skill] = argv
    return argv


class Sandbox(Closeable):
    """One fresh store for one invocation; ``close()`` (or ``with``) releases it."""

    def __init__(
        self,
        *,
        skill: str,
        stdin: bytes,
        limits: Limits,
        deadline: float,
        mounts: Sequence[Mount] = (),
        request: Any = None,
        caps: StoreCaps = StoreCaps(),
        stderr_keep: int = STDERR_KEEP,
    ) -> None:
        self.state = InvocationState(
            skill=skill,
            deadline=deadline,
            limits=limits,
            stdout=OutputSink(limits.output_bytes),
            stderr=OutputSink(stderr_keep, tail=True),
            request=request,
        )
        store = wasmtime.Store(get_engine())
        self.store: wasmtime.Store | None = store
        self._booked: float | None = None
        """The deadline whose tick this store booked (taken back when it is dropped)."""
        self.key = context_key(store._context())
        # Stdout and stderr sinks are 2n and 2n+1; unregistered by close(), not by wasmtime.
        self._sink_id = 2 * next(_ids)
        with _reg_lock:
            _STATES[self.key] = self.state
            _SINKS[self._sink_id] = self.state.stdout
            _SINKS[self._sink_id + 1] = self.state.stderr
        try:
            store.set_limits(
                memory_size=limits.memory_bytes,
                table_elements=caps.table_elements,
                instances=caps.instances,
                tables=caps.tables,
                memories=caps.memories,
            )
            store.set_wasi(self._wasi(skill, stdin, mounts))
            ffi.wasmtime_store_epoch_deadline_callback(
                store.ptr(), _epoch_expired, None, _NO_FINALIZER
            )
            ticks = self._book(deadline)
            if getattr(request, "cancel", None) is not None:
                ticks = min(ticks, CANCEL_CHECK_TICKS)
            store.set_epoch_deadline(ticks)
        except BaseException:
            self.close()
            raise

    def _wasi(self, skill: str, stdin: bytes, mounts: Sequence[Mount]) -> wasmtime.WasiConfig:
        cfg = wasmtime.WasiConfig()
        ptr = cfg.ptr()
        if not ffi.wasi_config_set_argv(ptr, 1, _argv(skill)):
            raise wasmtime.WasmtimeError("failed to configure argv")
        ffi.wasi_config_set_env(ptr, 0, _NO_ENV, _NO_ENV)  # explicitly none
        vec = ffi.wasm_byte_vec_t()
        buf = ctypes.create_string_buffer(stdin, len(stdin))
        ffi.wasm_byte_vec_new(
            ctypes.byref(vec), len(stdin), ctypes.cast(buf, ctypes.POINTER(ffi.wasm_byte_t))
        )
        ffi.wasi_config_set_stdin_bytes(ptr, ctypes.byref(vec))  # takes ownership
        ffi.wasi_config_set_stdout_custom(ptr, _sink_write, self._sink_id, _NO_FINALIZER)
        ffi.wasi_config_set_stderr_custom(ptr, _sink_write, self._sink_id + 1, _NO_FINALIZER)
        for m in mounts:
            if not m.host.is_dir():
                raise ExecutionError(
                    ErrorCode.FS_DENIED,
                    f"mount {m.guest!r} is unavailable (its host directory does not exist)",
                    detail=f"host directory {m.host} missing",
                )
            cfg.preopen_dir(str(m.host), m.guest, fs_mutable=bool(m.writable))
        return cfg

    def rearm(self, deadline: float, request: Any) -> None:
        """Bind a store made ahead of its call (a worker's prewarmed instance) to the call:
        its request (caps for host functions) and its deadline, re-armed on the epoch."""
        store = self.store
        if store is None:
            raise ValueError("the sandbox is closed")
        self.state.deadline = deadline
        self.state.request = request
        store.set_epoch_deadline(self._book(deadline))

    def _book(self, deadline: float) -> int:
        """``_arm``, with the ticker's tick at ``deadline`` booked in place of the one booked
        before (a prewarmed store re-armed for its call: the prewarm's is not needed)."""
        self._unbook()
        if wake_at(deadline):
            self._booked = deadline
        return _arm(deadline)

    def _unbook(self) -> None:
        booked, self._booked = self._booked, None
        if booked is not None:
            unwake(booked)

    def __exit__(self, *exc_info: object) -> None:
        self.close()
        exc = exc_info[1] if len(exc_info) > 1 else None
        if isinstance(exc, ExecutionError) and self.state.files_full and explains(exc):
            raise files_error(exc) from None  # the failure was the file limit, not the guest's

    def memory_size(self, instance: Any) -> int:
        """Bytes of the instance's exported ``memory`` (0 if none)."""
        if self.store is None:
            return 0
        item = ffi.wasmtime_extern_t()
        name = b"memory"
        ok = ffi.wasmtime_instance_export_get(
            self.store._context(), ctypes.byref(instance), name, len(name), ctypes.byref(item)
        )
        if not ok or cast(int, item.kind) != ffi.WASMTIME_EXTERN_MEMORY.value:
            return 0
        return int(
            ffi.wasmtime_memory_data_size(self.store._context(), ctypes.byref(item.of.memory))
        )

    def close(self) -> None:
        """Drop the store (its memory, WASI context and output callbacks) and its registry
        entries. The state goes first: once the store is freed its context key may be reused."""
        with _reg_lock:
            _STATES.pop(self.key, None)
        self._unbook()  # no guest of this store runs past here: its deadline's tick is moot
        store, self.store = self.store, None
        try:
            if store is not None:
                self.state.files_full = table_full()  # the guest's files are still open here
                store.close()
        finally:
            with _reg_lock:
                _SINKS.pop(self._sink_id, None)
                _SINKS.pop(self._sink_id + 1, None)
