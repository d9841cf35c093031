"""The per-call count of open guest files, and the clear error past it.

A guest's open files are host descriptors of the process running it (wasmtime's WASI table
holds one per guest file). In a worker, one call runs at a time under ``RLIMIT_NOFILE =
[workers] max_open_files`` (``workers/oslimits.py``), so what a call may hold is that limit
less the worker's own descriptors, counted once when the worker is ready (``configure``). A
guest that opens past it is refused by the OS; wasmtime hands the guest ``EIO`` for that, which
surfaces as an unclear "I/O error". So when a call *fails* while the descriptor table is full
(checked before the store and its files are dropped), the failure is replaced by
``files_error``: ``SKILL_ERROR`` naming the count, the limit and the policy key to raise; the
guest's own message stays in the detail. Calls of other skills never see this table (each
worker has its own).
"""

from __future__ import annotations

import errno
import os
import resource
from typing import Final

from bastion.errors import ErrorCode, ExecutionError

__all__ = ["configure", "count_open", "explains", "files_error", "guest_budget", "table_full"]

_POLICY_KEY: Final[str] = "[workers] max_open_files"
_EXPLAINED: Final[frozenset[ErrorCode]] = frozenset(
    {ErrorCode.SKILL_ERROR, ErrorCode.SKILL_CRASHED, ErrorCode.INTERNAL, ErrorCode.FS_DENIED}
)
"""Failures a full descriptor table can cause (a timeout or a memory cap stays what it is)."""
_state: dict[str, int] = {}


def configure(limit: int, baseline: int) -> None:
    """Record this worker's descriptor limit and how many it holds itself before any call."""
    _state["limit"] = limit
    _state["baseline"] = baseline


def guest_budget() -> int | None:
    """Files one call may have open at once in this worker (None outside a worker)."""
    if "limit" not in _state:
        return None
    return max(_state["limit"] - _state["baseline"], 0)


def count_open() -> int:
    """Descriptors open in this process (probed with ``fstat``: works without ``/proc``)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    top = soft if soft != resource.RLIM_INFINITY and soft < 65536 else 65536
    n = 0
    for fd in range(top):
        try:
            os.fstat(fd)
        except OSError:
            continue
        n += 1
    return n


def table_full() -> bool:
    """Whether this process cannot open one more descriptor right now."""
    try:
        fd = os.dup(2)
    except OSError as exc:
        return exc.errno in (errno.EMFILE, errno.ENFILE)
    os.close(fd)
    return False


def explains(exc: ExecutionError) -> bool:
    """Whether ``exc`` may be the effect of a full table (then ``files_error`` replaces it)."""
    return exc.error_code in _EXPLAINED


def files_error(original: ExecutionError) -> ExecutionError:
    """The clear error for a call that failed with the descriptor table full."""
    budget = guest_budget()
    if budget is not None:
        what = (
            f"the skill had too many files open at once: a call may hold {budget} "
            f"(the worker's descriptor limit, {_POLICY_KEY} = {_state['limit']}, less the "
            f"worker's own {_state['baseline']})"
        )
        fix = f"close files sooner, or raise {_POLICY_KEY} in the policy"
    else:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        what = (
            "the skill had too many files open at once: this process's descriptor table "
            f"(RLIMIT_NOFILE = {soft}) is full"
        )
        fix = 'close files sooner, or run skills in workers ([workers] isolation = "process")'
    return ExecutionError(
        ErrorCode.SKILL_ERROR,
        f"{what}; {fix}",
        detail=f"the skill's own error: {original.message}"
        + (f"\n{original.detail}" if original.detail else ""),
    )
