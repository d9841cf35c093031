"""What ``bastion doctor`` says about the worker layer: isolation mode, Landlock, seccomp, and
whether workers pre-fault the Python runner's pages (a speed matter, not a safety one).

Checked in the doctor's own process (the same kernel and container a worker would run in),
without starting a worker. A missing OS layer is reported with what is lost, and is not a
failure: the WebAssembly layer still confines every guest.
"""

from __future__ import annotations

import ctypes
import os
import platform
from typing import Any

from .. import pagewarm
from . import landlock, seccomp

__all__ = ["worker_checks"]

_PR_GET_SECCOMP = 21


def _seccomp_available() -> tuple[bool, str]:
    if not seccomp.supported():
        return False, f"no filter for {platform.system()}/{platform.machine()}"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_GET_SECCOMP, 0, 0, 0, 0) < 0:
        return False, f"the kernel refuses seccomp ({os.strerror(ctypes.get_errno())})"
    return True, f"filter denies {len(seccomp.DENIED_SYSCALLS)} system calls (exec, ptrace, ...)"


def worker_checks(policy: Any) -> list[tuple[str, bool, str]]:
    """``(name, ok, detail)`` rows for the doctor's table."""
    w = policy.doc.workers
    if w.isolation == "thread":
        return [
            (
                "workers",
                True,
                'isolation = "thread": sandboxed calls run on kernel threads (no OS layer, '
                "no hard stop of a guest blocked in a host call)",
            )
        ]
    count = w.count or os.cpu_count() or 1
    rows = [("workers", True, f'isolation = "process", up to {count} worker processes')]
    abi = landlock.abi_version()
    if not w.landlock:
        rows.append(("landlock", True, "off ([workers] landlock = false)"))
    elif abi:
        rows.append(
            ("landlock", True, f"ABI {abi}: workers read only cache, skills, mounts, Python")
        )
    else:
        rows.append(
            (
                "landlock",
                True,
                "NOT available on this kernel: a worker can open any file this user can "
                "(guests are still confined to their preopened mounts by WASI)",
            )
        )
    ok, detail = _seccomp_available()
    if not w.seccomp:
        rows.append(("seccomp", True, "off ([workers] seccomp = false)"))
    elif ok:
        rows.append(("seccomp", True, detail))
    else:
        rows.append(
            (
                "seccomp",
                True,
                f"NOT available ({detail}): a worker escaping WebAssembly could exec programs",
            )
        )
    if pagewarm.supported():
        detail = (
            "on: a Python call's memory slot is released and only the pages calls write are "
            "populated again (process_madvise + page map)"
        )
    else:
        detail = (
            "off (this kernel refuses process_madvise(MADV_POPULATE_WRITE) or the page map): "
            "each drop copies the runner's memory image back, ~1 ms more CPU per Python call"
        )
    rows.append(("pre-faulting", True, detail))
    return rows
