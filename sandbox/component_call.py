"""Instantiate a component in a fresh ``Sandbox`` and call one export, as data, never raising.

A component call fails as a ``WasmtimeError`` whose text ends with the trap's description
(wasmtime's C API gives components no trap code). ``fault_of`` turns it into the same ``Fault``
the WASI-module path uses, so ``errors_map.fault_to_error`` maps both alike: ``interrupt`` (or
our epoch callback's ``bastion:timeout``) -> TIMEOUT, ``call stack exhausted`` -> stack
overflow, a refused instantiation for memory -> MEMORY_LIMIT, other traps -> SKILL_CRASHED.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import wasmtime
from wasmtime.component import Component, ExportIndex

from .hostlink import close_invocation, component_linker
from .rawcall import Fault
from .store import Sandbox
from .ticker import guest_running

__all__ = [
    "CallOutcome",
    "call_export",
    "call_instance",
    "export_index",
    "fault_of",
    "instantiate_in",
]

_TRAPS: Final[tuple[tuple[str, wasmtime.TrapCode], ...]] = (
    ("interrupt", wasmtime.TrapCode.INTERRUPT),
    ("call stack exhausted", wasmtime.TrapCode.STACK_OVERFLOW),
    ("out of bounds memory access", wasmtime.TrapCode.MEMORY_OUT_OF_BOUNDS),
    ("unreachable", wasmtime.TrapCode.UNREACHABLE),
    ("integer divide by zero", wasmtime.TrapCode.INTEGER_DIVISION_BY_ZERO),
    ("integer overflow", wasmtime.TrapCode.INTEGER_OVERFLOW),
    ("invalid conversion to integer", wasmtime.TrapCode.BAD_CONVERSION_TO_INTEGER),
    ("indirect call type mismatch", wasmtime.TrapCode.BAD_SIGNATURE),
    ("uninitialized element", wasmtime.TrapCode.INDIRECT_CALL_TO_NULL),
    ("undefined element", wasmtime.TrapCode.TABLE_OUT_OF_BOUNDS),
    ("misaligned", wasmtime.TrapCode.HEAP_MISALIGNED),
)
_CAUSE: Final[str] = "wasm trap: "


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """The export's return value, or how the call failed (``instantiating`` if before it ran)."""

    value: Any = None
    fault: Fault | None = None
    instantiating: bool = False


def fault_of(exc: wasmtime.WasmtimeError) -> Fault:
    """Classify a failed component call by the trap text wasmtime appends to the error."""
    if isinstance(exc, wasmtime.ExitTrap):
        return Fault(exit_code=exc.code, message=str(exc))
    message = str(exc)
    idx = message.rfind(_CAUSE)
    if idx >= 0:
        cause = message[idx + len(_CAUSE) :].strip().lower()
        for needle, code in _TRAPS:
            if needle in cause:
                return Fault(trap_code=code, message=message)
    return Fault(message=message)


def export_index(component: Component, name: str) -> ExportIndex | None:
    """The index of a top-level export (look it up once, reuse it for every call)."""
    return component.get_export_index(name)


def instantiate_in(sandbox: Sandbox, component: Component) -> tuple[Any, CallOutcome | None]:
    """A fresh instance of ``component`` in ``sandbox``'s store, or the failed outcome.

    Separate from the call so a worker can instantiate the next call's instance ahead of it.
    """
    store = sandbox.store
    if store is None:
        raise ValueError("the sandbox is closed")
    try:
        with guest_running():  # the start function runs guest code
            return component_linker().instantiate(store, component), None
    except wasmtime.WasmtimeError as exc:
        return None, CallOutcome(fault=fault_of(exc), instantiating=True)


def call_instance(
    sandbox: Sandbox, instance: Any, export: str | ExportIndex, *args: Any
) -> CallOutcome:
    """Call ``export(*args)`` of an instance made by ``instantiate_in`` (once: never reuse it)."""
    store = sandbox.store
    if store is None:
        raise ValueError("the sandbox is closed")
    try:
        func = instance.get_func(store, export)
        if func is None:
            name = export if isinstance(export, str) else "the requested export"
            return CallOutcome(
                fault=Fault(message=f"bastion:no-entry component has no {name!r} function"),
                instantiating=True,
            )
        try:
            with guest_running():
                value = func(store, *args)
                func.post_return(store)
        except wasmtime.WasmtimeError as exc:
            return CallOutcome(fault=fault_of(exc))
        return CallOutcome(value=value)
    finally:
        close_invocation(sandbox.state)


def call_export(
    sandbox: Sandbox, component: Component, export: str | ExportIndex, *args: Any
) -> CallOutcome:
    """Instantiate ``component`` in ``sandbox``'s fresh store and call ``export(*args)``."""
    instance, failed = instantiate_in(sandbox, component)
    if failed is not None:
        close_invocation(sandbox.state)
        return failed
    return call_instance(sandbox, instance, export, *args)
