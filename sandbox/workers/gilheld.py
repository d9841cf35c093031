"""A few libc calls made *without* releasing the GIL, for the kernel's deadline path.

Every Python I/O call releases the GIL around its system call and must take it back after;
behind a busy host thread (a CPU-bound Python thread of the embedding application) taking it
back waits a whole switch interval (5 ms by default). A call answered at its deadline crosses
one unavoidable wait (the sleep until the worker's answer or the deadline); each further release
on the way back to the caller may add another 5 ms. The calls here never block: a ``recv`` with
``MSG_DONTWAIT`` of what is already queued on the worker's socket, and reads of ``/proc``, so
holding the GIL through them costs microseconds. Where libc cannot be loaded, ``None``: callers
fall back to the ``os`` functions.
"""

from __future__ import annotations

import ctypes
import socket
from typing import Final

__all__ = ["MSG_DONTWAIT", "libc"]

MSG_DONTWAIT: Final[int] = getattr(socket, "MSG_DONTWAIT", 0)


def _load() -> ctypes.PyDLL | None:
    try:
        lib = ctypes.PyDLL(None, use_errno=True)
        lib.open.argtypes, lib.open.restype = [ctypes.c_char_p, ctypes.c_int], ctypes.c_int
        lib.read.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
        lib.read.restype = ctypes.c_ssize_t
        lib.recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        lib.recv.restype = ctypes.c_ssize_t
        lib.close.argtypes, lib.close.restype = [ctypes.c_int], ctypes.c_int
    except (OSError, AttributeError):
        return None
    return lib


libc: Final[ctypes.PyDLL | None] = _load() if MSG_DONTWAIT else None
"""libc through ``PyDLL`` (its calls keep the GIL), or None."""
