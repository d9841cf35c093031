"""Thread-safe calls into and out of wasm through wasmtime's C API (``wasmtime._ffi``).

Why not ``Func.__call__`` and ``Linker.define_func``: wasmtime-py 50 passes a Python exception
raised in a host function back through one *process-global* ``LAST_EXCEPTION``, so with several
threads running guests one thread's host error can surface in another thread's call. Here:

- ``define_host_func`` installs our own trampoline: the Python callback never lets an exception
  escape; a ``GuestTrap`` becomes a wasm trap whose message we chose, anything else becomes a
  generic trap (the detail is logged, not shown);
- ``instantiate`` and ``call_start`` run the guest and return a ``Fault`` (exit status, trap
  code, message) instead of raising, so the caller maps it to an ``ErrorCode``;
- ``GuestMemory`` reads and writes the caller's exported ``memory`` with bounds checks.

ctypes releases the GIL for the duration of each C call, so guests run in parallel.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import wasmtime
from wasmtime import _ffi as ffi

from bastion.logs import get_logger

__all__ = [
    "Fault",
    "GuestMemory",
    "GuestTrap",
    "HostCall",
    "HostFn",
    "call_start",
    "context_key",
    "define_host_func",
    "instantiate",
]

_log = get_logger("bastion.sandbox.rawcall")
_U32: Final[int] = 0xFFFFFFFF
TRAP_PREFIX: Final[str] = "bastion:"


class GuestTrap(Exception):
    """Raised by a host function to trap the guest; ``reason`` is a short stable tag."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Fault:
    """How a guest call ended abnormally: WASI exit, a trap (with code) or another error."""

    exit_code: int | None = None
    trap_code: wasmtime.TrapCode | None = None
    message: str = ""

    @property
    def host_reason(self) -> str | None:
        """The ``GuestTrap`` reason if one of our host functions trapped the guest."""
        idx = self.message.find(TRAP_PREFIX)
        if idx < 0:
            return None
        tail = self.message[idx + len(TRAP_PREFIX) :]
        return tail.split()[0] if tail.split() else ""


class GuestMemory:
    """Bounds-checked access to the calling instance's exported linear memory."""

    def __init__(self, base: int, size: int) -> None:
        self.base = base
        self.size = size

    def check(self, ptr: int, length: int) -> None:
        """Trap (``GuestTrap("bad-pointer")``) unless ``[ptr, ptr+length)`` is inside memory."""
        if ptr < 0 or length < 0 or ptr + length > self.size:
            raise GuestTrap("bad-pointer")

    def read(self, ptr: int, length: int) -> bytes:
        self.check(ptr, length)
        return ctypes.string_at(self.base + ptr, length) if length else b""

    def write(self, ptr: int, data: bytes) -> None:
        self.check(ptr, len(data))
        if data:
            ctypes.memmove(self.base + ptr, data, len(data))


class HostCall:
    """What a host function sees: the store's context key, unsigned args, the guest memory."""

    __slots__ = ("_caller", "args", "ctx")

    def __init__(self, caller: Any, ctx: Any, args: list[int]) -> None:
        self._caller = caller
        self.ctx = ctx
        self.args = args

    @property
    def key(self) -> int:
        return context_key(self.ctx)

    def memory(self) -> GuestMemory:
        """The caller's exported ``memory``; traps if it has none."""
        item = ffi.wasmtime_extern_t()
        name = b"memory"
        ok = ffi.wasmtime_caller_export_get(self._caller, name, len(name), ctypes.byref(item))
        if not ok or cast(int, item.kind) != ffi.WASMTIME_EXTERN_MEMORY.value:
            raise GuestTrap("no-memory")
        mem = item.of.memory
        data = ffi.wasmtime_memory_data(self.ctx, ctypes.byref(mem))
        size = ffi.wasmtime_memory_data_size(self.ctx, ctypes.byref(mem))
        base = ctypes.cast(data, ctypes.c_void_p).value or 0
        return GuestMemory(base, int(size))


HostFn = Callable[[HostCall], int | None]
"""A host function: returns the single i32/i64 result (or None), raises ``GuestTrap``."""


def context_key(ctx: Any) -> int:
    """A stable integer naming a store context (same value from the store and its callers)."""
    return ctypes.cast(ctx, ctypes.c_void_p).value or 0


def _new_trap(message: str) -> int:
    raw = message.encode("utf-8")
    trap = ffi.wasmtime_trap_new(ctypes.create_string_buffer(raw), len(raw))
    return ctypes.cast(trap, ctypes.c_void_p).value or 0


_KEEP: list[Any] = []  # callbacks must outlive every linker that holds them


def define_host_func(
    linker: wasmtime.Linker,
    module: str,
    name: str,
    params: Sequence[wasmtime.ValType],
    results: Sequence[wasmtime.ValType],
    fn: HostFn,
) -> None:
    """Define ``module.name`` in ``linker`` as ``fn``, with a trampoline that never raises."""
    ty = wasmtime.FuncType(list(params), list(results))
    is64 = [str(p) == "i64" for p in params]
    res64 = bool(results) and str(results[0]) == "i64"
    qual = f"{module}.{name}"

    def trampoline(_env: Any, caller: Any, args: Any, nargs: int, res: Any, nres: int) -> int:
        try:
            vals = [
                (args[i].of.i64 & 0xFFFFFFFFFFFFFFFF) if is64[i] else (args[i].of.i32 & _U32)
                for i in range(nargs)
            ]
            out = fn(HostCall(caller, ffi.wasmtime_caller_context(caller), vals))
            if nres:
                value = int(out or 0)
                if res64:
                    res[0].kind = ffi.WASMTIME_I64.value
                    res[0].of.i64 = ctypes.c_int64(value).value
                else:
                    res[0].kind = ffi.WASMTIME_I32.value
                    res[0].of.i32 = ctypes.c_int32(value).value
            return 0
        except GuestTrap as trap:
            return _new_trap(f"{TRAP_PREFIX}{trap.reason}")
        except BaseException as exc:  # never let a Python exception cross into wasmtime
            _log.error("hostfn.failed", func=qual, error=repr(exc)[:500])
            return _new_trap(f"{TRAP_PREFIX}host-error")

    cb = ffi.wasmtime_func_callback_t(trampoline)
    fin = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda _p: None)
    _KEEP.extend((cb, fin, ty))
    mod_b, name_b = module.encode(), name.encode()
    err = ffi.wasmtime_linker_define_func(
        linker.ptr(), mod_b, len(mod_b), name_b, len(name_b), ty.ptr(), cb, None, fin
    )
    if err:
        raise wasmtime.WasmtimeError._from_ptr(err)


def _error_fault(err: Any) -> Fault:
    code = ctypes.c_int(0)
    if ffi.wasmtime_error_exit_status(err, ctypes.byref(code)):
        ffi.wasmtime_error_delete(err)
        return Fault(exit_code=code.value)
    vec = ffi.wasm_byte_vec_t()
    ffi.wasmtime_error_message(err, ctypes.byref(vec))
    msg = ffi.to_str(vec)
    ffi.wasm_byte_vec_delete(ctypes.byref(vec))
    ffi.wasmtime_error_delete(err)
    return Fault(message=msg)


def _trap_fault(trap: Any) -> Fault:
    raw_code = ffi.wasmtime_trap_code_t()
    code: wasmtime.TrapCode | None = None
    if ffi.wasmtime_trap_code(trap, ctypes.byref(raw_code)):
        try:
            code = wasmtime.TrapCode(raw_code.value)
        except ValueError:
            code = None
    vec = ffi.wasm_byte_vec_t()
    ffi.wasm_trap_message(trap, ctypes.byref(vec))
    msg = ffi.to_str(vec)
    ffi.wasm_byte_vec_delete(ctypes.byref(vec))
    ffi.wasm_trap_delete(trap)
    return Fault(trap_code=code, message=msg)


def instantiate(
    pre: wasmtime.InstancePre, store: wasmtime.Store
) -> tuple[Any | None, Fault | None]:
    """Instantiate ``pre`` in ``store``: ``(raw instance, None)`` or ``(None, fault)``."""
    instance = ffi.wasmtime_instance_t()
    trap = ctypes.POINTER(ffi.wasm_trap_t)()
    err = ffi.wasmtime_instance_pre_instantiate(
        pre.ptr(), store._context(), ctypes.byref(instance), ctypes.byref(trap)
    )
    if err:
        return None, _error_fault(err)
    if trap:
        return None, _trap_fault(trap)
    return instance, None


def call_start(store: wasmtime.Store, instance: Any, export: str = "_start") -> Fault | None:
    """Call the nullary export ``export`` of a raw instance; ``None`` if it returned."""
    ctx = store._context()
    item = ffi.wasmtime_extern_t()
    name = export.encode()
    ok = ffi.wasmtime_instance_export_get(
        ctx, ctypes.byref(instance), name, len(name), ctypes.byref(item)
    )
    if not ok or cast(int, item.kind) != ffi.WASMTIME_EXTERN_FUNC.value:
        return Fault(message=f"{TRAP_PREFIX}no-entry")
    trap = ctypes.POINTER(ffi.wasm_trap_t)()
    err = ffi.wasmtime_func_call(
        ctx, ctypes.byref(item.of.func), None, 0, None, 0, ctypes.byref(trap)
    )
    if err:
        return _error_fault(err)
    if trap:
        return _trap_fault(trap)
    return None
