"""How a guest run ended -> the ``ExecutionError`` the kernel reports.

Precedence (first match wins):

1. output over its cap                         -> ``OUTPUT_LIMIT``
2. a host function trapped on purpose           -> its error (e.g. ``TIMEOUT`` in a sleep)
   the caller's cancel event stopped the guest  -> ``CANCELLED``
3. epoch deadline / wall clock passed           -> ``TIMEOUT``
4. instantiation refused for memory             -> ``MEMORY_LIMIT``
5. exit status 0                                -> success (``None``)
6. stack overflow trap                          -> ``SKILL_CRASHED`` "stack overflow"
7. failure with memory at the cap               -> ``MEMORY_LIMIT``
8. non-zero exit                                -> the last host denial (e.g. ``NETWORK_DENIED``)
                                                   if any, else ``SKILL_ERROR`` + stderr tail
9. bad pointer to a host function / other trap  -> ``SKILL_CRASHED`` with a short reason

"Memory at the cap" (7): the store limiter makes ``memory.grow`` return -1, and wasmtime's C API
gives no callback when it refuses. A guest that failed while its memory is within
``max(1 MiB, cap/16)`` of the cap is reported as ``MEMORY_LIMIT``; one single huge allocation
refused while memory is still small is reported by how the guest then fails (documented limit).
Public messages never hold host paths or host tracebacks; wasmtime's text goes to ``detail``.
"""

from __future__ import annotations

import re
from typing import Final

import wasmtime

from bastion.errors import ErrorCode, ExecutionError

from .rawcall import Fault
from .store import InvocationState

__all__ = ["STDERR_TAIL", "fault_to_error", "memory_at_cap", "scrub_tail"]

STDERR_TAIL: Final[int] = 500
"""Characters of the guest's stderr quoted in a ``SKILL_ERROR`` message."""

_CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]|\x1b\[[0-9;?]*[A-Za-z]")
_MIB: Final[int] = 1024 * 1024

_TRAP_REASONS: Final[dict[wasmtime.TrapCode, str]] = {
    wasmtime.TrapCode.MEMORY_OUT_OF_BOUNDS: "out-of-bounds memory access",
    wasmtime.TrapCode.HEAP_MISALIGNED: "misaligned memory access",
    wasmtime.TrapCode.TABLE_OUT_OF_BOUNDS: "out-of-bounds table access",
    wasmtime.TrapCode.INDIRECT_CALL_TO_NULL: "indirect call to null",
    wasmtime.TrapCode.BAD_SIGNATURE: "indirect call signature mismatch",
    wasmtime.TrapCode.INTEGER_OVERFLOW: "integer overflow",
    wasmtime.TrapCode.INTEGER_DIVISION_BY_ZERO: "integer division by zero",
    wasmtime.TrapCode.BAD_CONVERSION_TO_INTEGER: "invalid conversion to integer",
    wasmtime.TrapCode.UNREACHABLE: "unreachable code reached (the skill aborted)",
    wasmtime.TrapCode.OUT_OF_FUEL: "out of fuel",
}

_HOST_REASONS: Final[dict[str, str]] = {
    "bad-pointer": "invalid pointer passed to a host function",
    "no-memory": "the module exports no memory for host functions",
    "no-entry": "the module has no _start export (not a WASI command)",
    "host-error": "a host function failed",
    "no-invocation": "host function called outside an invocation",
}


def scrub_tail(raw: bytes, limit: int = STDERR_TAIL) -> str:
    """Last ``limit`` characters of guest text, decoded, without control/ANSI sequences."""
    text = _CTRL.sub("", raw.decode("utf-8", "replace")).strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def memory_at_cap(memory_bytes: int, cap: int) -> bool:
    """Whether a guest's memory is close enough to the cap that a grow was likely refused."""
    return memory_bytes > 0 and memory_bytes + max(_MIB, cap // 16) >= cap


def fault_to_error(
    fault: Fault | None,
    state: InvocationState,
    *,
    memory_bytes: int = 0,
    instantiating: bool = False,
) -> ExecutionError | None:
    """Map the end of a run to an error, or ``None`` if the skill succeeded."""
    lim = state.limits
    if state.stdout.capped:
        return ExecutionError(
            ErrorCode.OUTPUT_LIMIT, f"skill output exceeded the limit of {lim.output_kb} KiB"
        )
    if state.host_error is not None:
        return state.host_error
    if state.cancelled:
        return ExecutionError(
            ErrorCode.CANCELLED, "the caller cancelled the call; the skill was stopped"
        )
    if state.timed_out or (fault is not None and fault.trap_code is wasmtime.TrapCode.INTERRUPT):
        return ExecutionError(
            ErrorCode.TIMEOUT,
            f"skill exceeded its time limit of {lim.timeout_ms} ms",
            detail=fault.message if fault else None,
        )
    if fault is None:
        return None
    detail = fault.message or None
    if instantiating and "limit" in fault.message and "memory" in fault.message:
        return ExecutionError(
            ErrorCode.MEMORY_LIMIT,
            f"skill needs more memory than its limit of {lim.memory_mb} MiB",
            detail=detail,
        )
    if fault.exit_code == 0:
        return None
    if fault.trap_code is wasmtime.TrapCode.STACK_OVERFLOW:
        return ExecutionError(ErrorCode.SKILL_CRASHED, "stack overflow", detail=detail)
    if memory_at_cap(memory_bytes, lim.memory_bytes):
        return ExecutionError(
            ErrorCode.MEMORY_LIMIT,
            f"skill exceeded its memory limit of {lim.memory_mb} MiB",
            detail=detail,
        )
    if fault.exit_code is not None:
        if state.last_denial is not None:
            d = state.last_denial
            return ExecutionError(d.error_code, d.message, detail=d.detail)
        tail = scrub_tail(bytes(state.stderr.buf))
        msg = f"skill exited with status {fault.exit_code}"
        return ExecutionError(
            ErrorCode.SKILL_ERROR, f"{msg}: {tail}" if tail else msg, detail=detail
        )
    reason = fault.host_reason
    if reason is not None:
        text = _HOST_REASONS.get(reason, "a host function trapped")
        return ExecutionError(ErrorCode.SKILL_CRASHED, text, detail=detail)
    if fault.trap_code is not None:
        text = _TRAP_REASONS.get(fault.trap_code, f"trap: {fault.trap_code.name.lower()}")
        return ExecutionError(ErrorCode.SKILL_CRASHED, text, detail=detail)
    if instantiating:
        return ExecutionError(
            ErrorCode.SKILL_CRASHED, "the module could not be instantiated", detail=detail
        )
    return ExecutionError(ErrorCode.SKILL_CRASHED, "the skill crashed", detail=detail)
