"""Landlock (Linux >= 5.13) through raw syscalls: confine a worker's file system access.

``restrict(read=..., write=...)`` builds a ruleset that handles every file-system right the
running kernel knows, allows reading (files and directories) beneath the ``read`` paths and
reading and writing beneath the ``write`` paths, and applies it to the calling process for
good (``no_new_privs`` must already be set). Everything else, ``/etc/passwd`` included, is
refused by the kernel with ``EACCES``. ``abi_version()`` says whether Landlock is usable.
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Iterable
from typing import Final

__all__ = ["LandlockError", "abi_version", "restrict"]

_SYS: Final[dict[str, tuple[int, int, int]]] = {
    # landlock_create_ruleset, landlock_add_rule, landlock_restrict_self (same on both)
    "x86_64": (444, 445, 446),
    "aarch64": (444, 445, 446),
}
_CREATE_RULESET_VERSION: Final[int] = 1
_RULE_PATH_BENEATH: Final[int] = 1

_EXECUTE: Final[int] = 1 << 0
_WRITE_FILE: Final[int] = 1 << 1
_READ_FILE: Final[int] = 1 << 2
_READ_DIR: Final[int] = 1 << 3
_TRUNCATE: Final[int] = 1 << 14
_IOCTL_DEV: Final[int] = 1 << 15
_ABI_RIGHTS: Final[dict[int, int]] = {
    1: (1 << 13) - 1,
    2: (1 << 14) - 1,
    3: (1 << 15) - 1,
    4: (1 << 15) - 1,
}
"""File-system rights each ABI handles (5+ adds IOCTL_DEV: all 16 bits)."""
_FILE_RIGHTS: Final[int] = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV
_READ: Final[int] = _READ_FILE | _READ_DIR


class LandlockError(OSError):
    """Landlock is unavailable or a rule could not be added."""


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = ctypes.CDLL(None, use_errno=True)


def _nums() -> tuple[int, int, int] | None:
    return _SYS.get(platform.machine()) if platform.system() == "Linux" else None


def abi_version() -> int:
    """The running kernel's Landlock ABI version; 0 when unavailable (or not Linux)."""
    nums = _nums()
    if nums is None:
        return 0
    v = int(_libc.syscall(nums[0], None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION))
    return max(v, 0)


def _handled(abi: int) -> int:
    return _ABI_RIGHTS.get(abi, (1 << 16) - 1)


def restrict(*, read: Iterable[str], write: Iterable[str] = ()) -> int:
    """Apply the ruleset to this process; returns the ABI version used. Raises LandlockError."""
    nums = _nums()
    abi = abi_version()
    if nums is None or abi <= 0:
        raise LandlockError("Landlock is not supported by the running kernel")
    handled = _handled(abi)
    attr = ctypes.c_uint64(handled)  # ABI 1-3 size: handled_access_fs only (no net rules)
    ruleset = int(_libc.syscall(nums[0], ctypes.byref(attr), ctypes.c_size_t(8), 0))
    if ruleset < 0:
        err = ctypes.get_errno()
        raise LandlockError(err, f"landlock_create_ruleset failed: {os.strerror(err)}")
    try:
        for paths, rights in ((read, _READ), (write, handled)):
            for path in paths:
                _add(nums[1], ruleset, path, rights & handled)
        if int(_libc.syscall(nums[2], ruleset, 0)) < 0:
            err = ctypes.get_errno()
            raise LandlockError(err, f"landlock_restrict_self failed: {os.strerror(err)}")
    finally:
        os.close(ruleset)
    return abi


def _add(nr: int, ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # a path that does not exist grants nothing
    try:
        if not os.path.isdir(path):
            rights &= _FILE_RIGHTS
        rule = _PathBeneath(rights, fd)
        if int(_libc.syscall(nr, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0)) < 0:
            err = ctypes.get_errno()
            raise LandlockError(err, f"landlock_add_rule({path!r}) failed: {os.strerror(err)}")
    finally:
        os.close(fd)
