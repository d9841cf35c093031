"""Whether a worker's main thread is running on a CPU, read from ``/proc/PID/stat``.

At a call's deadline the kernel asks this once: a worker whose main thread is *running* is
executing guest code, which the epoch deadline stops within a millisecond or two, so it gets
the grace to answer ``TIMEOUT`` itself (and stays alive, saving a worker start); a worker that
is *not* running (asleep in a WASI ``poll_oneoff``, blocked in a host call, stopped) would not
be stopped by the epoch at all, so it is killed at once instead of after the grace. Only the
kernel's parent-side view is used: a worker cannot make itself look blocked to dodge the grace
(being killed sooner is its only gain), and one that looks running is still killed once the
grace is over.
"""

from __future__ import annotations

import ctypes
import os
from typing import Final

from .gilheld import libc as _LIBC

__all__ = ["is_running"]

_O_RDONLY_CLOEXEC: Final[int] = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
_PROC: Final[bool] = os.path.isdir("/proc/self")


def _stat(pid: int) -> bytes | None:
    """The first bytes of ``/proc/PID/stat``, read keeping the GIL (``gilheld``)."""
    path = f"/proc/{pid}/stat".encode()
    if _LIBC is None:
        try:
            with open(path, "rb", buffering=0) as f:
                return f.read(512)
        except OSError:
            return None
    fd = _LIBC.open(path, _O_RDONLY_CLOEXEC)
    if fd < 0:
        return None
    try:
        buf = ctypes.create_string_buffer(512)
        n = _LIBC.read(fd, buf, 512)
        return buf.raw[:n] if n > 0 else None
    finally:
        _LIBC.close(fd)


def is_running(pid: int) -> bool | None:
    """True if the process's main thread is in state ``R`` (on a CPU or runnable), False if
    in any other state or gone, None where ``/proc`` cannot tell (not Linux)."""
    if not _PROC:
        return None
    data = _stat(pid)
    if data is None:
        return False
    # "pid (comm) S ...": comm may hold spaces or parentheses, so split after the last ')'.
    end = data.rfind(b")")
    if end < 0 or end + 3 > len(data):
        return None
    return data[end + 2 : end + 3] == b"R"
