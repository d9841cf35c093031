"""A seccomp-BPF filter, written by hand: after start-up a worker may not exec, trace or mount.

``install()`` loads a classic-BPF program with ``prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER)``.
It kills the process on a foreign syscall ABI (x32 numbers on x86_64, or another audit arch),
answers ``EPERM`` to the denied system calls below and to ``clone``/``unshare`` asking for new
namespaces, ``ENOSYS`` to ``clone3`` (whose flags live in memory BPF cannot read; libc then
falls back to ``clone``), and allows everything else. ``no_new_privs`` must be set first.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
from typing import Final

__all__ = ["DENIED_SYSCALLS", "SeccompError", "install", "supported"]

DENIED_SYSCALLS: Final[tuple[str, ...]] = (
    "execve", "execveat", "ptrace", "process_vm_readv", "process_vm_writev",
    "mount", "umount2", "pivot_root", "chroot", "setns", "unshare",
    "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    "kexec_load", "init_module", "finit_module", "delete_module", "bpf", "perf_event_open",
    "keyctl", "add_key", "request_key", "userfaultfd", "open_by_handle_at",
    "name_to_handle_at", "swapon", "swapoff", "reboot", "personality",
)  # fmt: skip
"""System calls a worker is refused (``EPERM``) once the filter is installed."""

_X86_64: Final[dict[str, int]] = {
    "execve": 59, "execveat": 322, "ptrace": 101, "process_vm_readv": 310,
    "process_vm_writev": 311, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
    "setns": 308, "unshare": 272, "kexec_load": 246, "init_module": 175, "finit_module": 313,
    "delete_module": 176, "bpf": 321, "perf_event_open": 298, "keyctl": 250, "add_key": 248,
    "request_key": 249, "userfaultfd": 323, "open_by_handle_at": 304, "name_to_handle_at": 303,
    "swapon": 167, "swapoff": 168, "reboot": 169, "personality": 135,
    "clone": 56, "clone3": 435,
}  # fmt: skip
_AARCH64: Final[dict[str, int]] = {
    "execve": 221, "execveat": 281, "ptrace": 117, "process_vm_readv": 270,
    "process_vm_writev": 271, "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51,
    "setns": 268, "unshare": 97, "kexec_load": 104, "init_module": 105, "finit_module": 273,
    "delete_module": 106, "bpf": 280, "perf_event_open": 241, "keyctl": 219, "add_key": 217,
    "request_key": 218, "userfaultfd": 282, "open_by_handle_at": 265, "name_to_handle_at": 264,
    "swapon": 224, "swapoff": 225, "reboot": 142, "personality": 92,
    "clone": 220, "clone3": 435,
}  # fmt: skip
_NEW_API: Final[dict[str, int]] = {
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
    "fspick": 433, "mount_setattr": 442,
}  # fmt: skip
_ARCH: Final[dict[str, tuple[int, dict[str, int]]]] = {
    "x86_64": (0xC000003E, _X86_64 | _NEW_API),
    "aarch64": (0xC00000B7, _AARCH64 | _NEW_API),
}
_CLONE_NEW_FLAGS: Final[int] = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)

_LD_W_ABS: Final[int] = 0x20
_JEQ_K: Final[int] = 0x15
_JGE_K: Final[int] = 0x35
_JSET_K: Final[int] = 0x45
_RET_K: Final[int] = 0x06
_RET_ALLOW: Final[int] = 0x7FFF0000
_RET_KILL_PROCESS: Final[int] = 0x80000000
_RET_ERRNO: Final[int] = 0x00050000
_EPERM: Final[int] = 1
_ENOSYS: Final[int] = 38
_X32_BIT: Final[int] = 0x40000000
_PR_SET_SECCOMP: Final[int] = 22
_SECCOMP_MODE_FILTER: Final[int] = 2
_SECCOMP_SET_MODE_FILTER: Final[int] = 1
_TSYNC: Final[int] = 1
_SECCOMP_SYSCALL: Final[dict[str, int]] = {"x86_64": 317, "aarch64": 277}


class SeccompError(OSError):
    """The filter could not be installed."""


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def supported() -> bool:
    """True on the architectures this filter knows (Linux x86_64 and aarch64)."""
    return platform.system() == "Linux" and platform.machine() in _ARCH


def _ins(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def program() -> bytes:
    """The BPF program for this machine, as ``struct sock_filter`` bytes."""
    audit_arch, nums = _ARCH[platform.machine()]
    denied = [nums[name] for name in DENIED_SYSCALLS]
    out = [
        _ins(_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        _ins(_JEQ_K, 1, 0, audit_arch),
        _ins(_RET_K, 0, 0, _RET_KILL_PROCESS),
        _ins(_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
    ]
    if platform.machine() == "x86_64":
        out += [_ins(_JGE_K, 0, 1, _X32_BIT), _ins(_RET_K, 0, 0, _RET_KILL_PROCESS)]
    out += [_ins(_JEQ_K, 0, 1, nums["clone3"]), _ins(_RET_K, 0, 0, _RET_ERRNO | _ENOSYS)]
    # clone: refuse new namespaces (flags are args[0]; its low 32 bits at offset 16).
    out += [
        _ins(_JEQ_K, 0, 3, nums["clone"]),
        _ins(_LD_W_ABS, 0, 0, 16),
        _ins(_JSET_K, 0, 1, _CLONE_NEW_FLAGS),
        _ins(_RET_K, 0, 0, _RET_ERRNO | _EPERM),
        _ins(_LD_W_ABS, 0, 0, 0),  # reload nr (clone without new namespaces falls through)
    ]
    for nr in denied:
        out += [_ins(_JEQ_K, 0, 1, nr), _ins(_RET_K, 0, 0, _RET_ERRNO | _EPERM)]
    out.append(_ins(_RET_K, 0, 0, _RET_ALLOW))
    return b"".join(out)


def install() -> int:
    """Install the filter on the calling thread's process; returns the instruction count."""
    if not supported():
        raise SeccompError(f"no seccomp filter for {platform.system()}/{platform.machine()}")
    code = program()
    buf = ctypes.create_string_buffer(code, len(code))
    prog = _SockFprog(len(code) // 8, ctypes.cast(buf, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    # seccomp(SET_MODE_FILTER, TSYNC): every thread of the process, not only the caller.
    nr = _SECCOMP_SYSCALL[platform.machine()]
    if libc.syscall(nr, _SECCOMP_SET_MODE_FILTER, _TSYNC, ctypes.byref(prog)) != 0:
        err = ctypes.get_errno()
        if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
            err = ctypes.get_errno() or err
            raise SeccompError(err, f"installing the seccomp filter failed: {os.strerror(err)}")
    return len(code) // 8
