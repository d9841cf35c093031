"""The operating-system layer under the WebAssembly sandbox, applied once per worker.

``apply(...)`` runs in the worker after it has imported and loaded everything it needs and
before any guest runs (and before any thread starts: Landlock binds the calling thread):

1. ``RLIMIT_NOFILE`` (the worker's whole descriptor table: one skill cannot starve the kernel
   or another worker; what a call may hold is that less the worker's own, ``fdlimit``, and a
   call failing past it gets an error naming the limit), ``RLIMIT_CORE = 0`` (no core dumps
   of guest memory or secrets);
2. ``PR_SET_NO_NEW_PRIVS`` (no set-uid gain; required by the next two);
3. Landlock where the kernel has it: reading only beneath the cache, the Python installation
   and the few system files name resolution and TLS need, writing only the policy's writable
   mounts;
4. a seccomp filter (``seccomp.py``): no ``execve``, ``ptrace``, ``mount``, namespaces, ...

Descriptors and the environment are dealt with before this (the pool starts the worker with
only its socket, ``/dev/null`` and a stderr pipe, and an empty environment). The report says what
took effect; ``bastion doctor`` and the tests read it.
"""

from __future__ import annotations

import ctypes
import os
import platform
import resource
import sys
import sysconfig
import threading
from collections.abc import Iterable
from typing import Any, Final

from .. import fdlimit
from . import landlock, seccomp

__all__ = ["SYSTEM_READ_PATHS", "apply", "python_read_paths"]

SYSTEM_READ_PATHS: Final[tuple[str, ...]] = (
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/host.conf",
    "/etc/ssl/certs",
    "/etc/ca-certificates",
    "/usr/share/ca-certificates",
    "/usr/lib/ssl",
    "/dev/null",
    "/dev/urandom",
)
"""Read-only system paths a worker keeps: DNS resolution and TLS trust stores."""

_PR_SET_NO_NEW_PRIVS: Final[int] = 38


def python_read_paths() -> list[str]:
    """The Python installation and import paths (lazy imports and extension modules)."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            paths.add(p)
    paths.update(p for p in sys.path if p and os.path.isdir(p))
    # Bastion's own packages: an editable install imports them from the source tree through a
    # finder, not from sys.path, and modules a call needs are imported lazily, after Landlock.
    import bastion
    import bastion.sandbox

    paths.update(os.path.dirname(m.__file__ or "") for m in (bastion, bastion.sandbox))
    paths.discard("")
    return sorted(paths)


def apply(
    *,
    max_open_files: int,
    read: Iterable[str],
    write: Iterable[str],
    landlock_on: bool = True,
    seccomp_on: bool = True,
) -> dict[str, Any]:
    """Apply the limits to this process; returns what took effect (never raises for 3-4)."""
    if threading.active_count() != 1:
        raise RuntimeError("OS limits must be applied before the worker starts any thread")
    report: dict[str, Any] = {}
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = max_open_files if hard == resource.RLIM_INFINITY else min(max_open_files, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    report["max_open_files"] = limit
    own = fdlimit.count_open()
    fdlimit.configure(limit, own)
    report["guest_files"] = fdlimit.guest_budget()
    """What one call's guest may hold open at once: the limit less the worker's own."""
    report["core"] = 0
    report["no_new_privs"] = False
    if platform.system() == "Linux":
        libc = ctypes.CDLL(None, use_errno=True)
        report["no_new_privs"] = libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
    report["landlock"] = 0
    report["landlock_error"] = None
    if landlock_on:
        try:
            report["landlock"] = landlock.restrict(read=list(read), write=list(write))
        except OSError as exc:
            report["landlock_error"] = str(exc)[:200]
    report["seccomp"] = False
    report["seccomp_error"] = None
    if seccomp_on:
        try:
            seccomp.install()
            report["seccomp"] = True
        except OSError as exc:
            report["seccomp_error"] = str(exc)[:200]
    return report
