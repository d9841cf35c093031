"""After a component call: remove every symlink the call left in a writable mount.

WASI modules cannot create links at all (``hostabi`` shadows ``path_symlink``/``path_link``).
Components cannot be treated the same way from wasmtime-py 50: shadowing one function of
``wasi:filesystem/types`` replaces the whole instance, and the ``descriptor`` resource it needs
is the WASI host's own type, which Python cannot name (instantiation then fails with "resource
implementation is missing"). wasmtime's own check refuses absolute symlink targets but creates
relative ones that climb out (``../../etc/passwd``), so the host sweeps after each call.

The sweep walks each writable mount by directory file descriptors opened with ``O_NOFOLLOW``
(``unlinkat`` relative to the directory, never a path that a swapped link could redirect) and
removes every symlink whose status changed since the call began (``st_ctime`` is set by the
kernel and cannot be forged by the guest). Every new symlink goes, not only those that point
outside: a lexical "stays inside" test is fooled by chains of links (``a -> .``, then
``a/a/../../x``). Hard links need no sweep: wasmtime resolves both names inside mutable
preopens, so a hard link can only name a file the skill could already write.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterable
from typing import Any, Final

from bastion.executor import Mount
from bastion.logs import get_logger

__all__ = ["CTIME_SLACK_NS", "MAX_SWEEP_ENTRIES", "call_started_ns", "sweep_links"]

CTIME_SLACK_NS: Final[int] = 1_000_000_000
"""Links changed up to 1 s before the call are swept too (file times use a coarse clock)."""
MAX_SWEEP_ENTRIES: Final[int] = 200_000
"""Entries looked at per mount; past this the sweep stops and says so in the log."""

_log = get_logger("bastion.sandbox.linksweep")
_DIR_FLAGS: Final[int] = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def call_started_ns(deadline: float, timeout_ms: int) -> int:
    """Wall-clock time (ns) at which a call with this monotonic ``deadline`` began."""
    elapsed_s = timeout_ms / 1000 - (deadline - time.monotonic())
    return time.time_ns() - int(max(elapsed_s, 0.0) * 1e9)


def sweep_links(mounts: Iterable[Mount], since_ns: int, *, logger: Any = None) -> int:
    """Remove symlinks changed at or after ``since_ns - CTIME_SLACK_NS`` from the writable
    ``mounts``; returns how many were removed. Never raises (errors are logged)."""
    log = logger if logger is not None else _log
    cutoff = since_ns - CTIME_SLACK_NS
    removed = 0
    for mount in mounts:
        if not mount.writable:
            continue
        try:
            removed += _sweep(str(mount.host), cutoff, log, mount.guest)
        except OSError as exc:
            log.warning("linksweep.failed", mount=mount.guest, error=exc.strerror or str(exc))
    return removed


def _sweep(root: str, cutoff: int, log: Any, guest: str) -> int:
    removed = 0
    seen = 0
    stack = [os.open(root, _DIR_FLAGS)]
    try:
        while stack:
            fd = stack.pop()
            try:
                with os.scandir(fd) as entries:
                    names = [
                        (e.name, e.is_symlink(), e.is_dir(follow_symlinks=False)) for e in entries
                    ]
                for name, is_link, is_dir in names:
                    seen += 1
                    if seen > MAX_SWEEP_ENTRIES:
                        log.warning("linksweep.truncated", mount=guest, limit=MAX_SWEEP_ENTRIES)
                        return removed
                    if is_link:
                        removed += _remove_if_new(fd, name, cutoff, log, guest)
                    elif is_dir:
                        try:
                            stack.append(os.open(name, _DIR_FLAGS, dir_fd=fd))
                        except OSError:
                            continue  # replaced by a link meanwhile, or unreadable: skip
            finally:
                os.close(fd)
    finally:
        for fd in stack:
            os.close(fd)
    return removed


def _remove_if_new(dir_fd: int, name: str, cutoff: int, log: Any, guest: str) -> int:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode) or st.st_ctime_ns < cutoff:
            return 0
        os.unlink(name, dir_fd=dir_fd)  # unlinkat: removes the link itself, follows nothing
    except OSError as exc:
        log.warning("linksweep.unlink_failed", mount=guest, error=exc.strerror or str(exc))
        return 0
    log.warning("linksweep.removed", mount=guest, name=name[:200])
    return 1
