"""Execution workers: the process layer under the WebAssembly sandbox.

Place in the pipeline: the kernel reviews, grants, validates and guards a call, then its
executor step hands sandboxed runtimes (``wasm``, ``component``, ``python``) to a pool of
worker processes instead of running them on a kernel thread. A worker holds the engine and
the verified compiled modules, runs the call in a prewarmed fresh instance inside its own OS
limits (rlimits, no_new_privs, Landlock, seccomp), and returns raw bytes that the kernel then
decodes, sanitizes, meters and audits as before. ``[workers] isolation = "thread"`` keeps
the in-process mode.

Modules: ``framing`` (the wire format), ``wire`` (request and outcome encoding), ``pool``
(the kernel's side: start, call, kill, replace), ``proxy`` (the executors the kernel sees),
``entry`` (the worker's main), ``oslimits`` with ``landlock`` and ``seccomp`` (the OS layer),
``repair`` (a worker's cache miss: the kernel repairs the disk, recycles, retries).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .pool import PoolStats, WorkerPool, WorkerSettings
    from .proxy import SANDBOXED_RUNTIMES, ProcessExecutor, wrap_executors

# Imported on first use: ``bastion run`` imports ``prespawn`` from here before anything else,
# and the pool's own imports (structlog, the executor types) would delay its early worker.
_LAZY = {
    "PoolStats": "pool",
    "WorkerPool": "pool",
    "WorkerSettings": "pool",
    "SANDBOXED_RUNTIMES": "proxy",
    "ProcessExecutor": "proxy",
    "wrap_executors": "proxy",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "SANDBOXED_RUNTIMES",
    "PoolStats",
    "ProcessExecutor",
    "WorkerPool",
    "WorkerSettings",
    "pool_for_kernel",
    "settings_from_policy",
    "wrap_executors",
]


def settings_from_policy(policy: Any, *, skill_folders: Iterable[Path] = ()) -> WorkerSettings:
    """``WorkerSettings`` from a loaded policy's ``[workers]`` section and its mounts.

    Landlock keeps read access to the skill folders (sources and modules are read there) and
    to read-only mounts, and write access to writable mounts; a call's WASI preopens narrow
    this further to the skill's own grants.
    """
    from .pool import WorkerSettings

    section = policy.doc.workers
    mounts = list(policy.mounts)
    for extra in policy.skill_mounts.values():
        mounts += list(extra)
    read = {str(p) for p in skill_folders if str(p) not in ("", ".")}
    read |= {str(m.host) for m in mounts if not m.writable}
    write = sorted({str(m.host) for m in mounts if m.writable})
    caps = [policy.doc.limits.memory_mb]
    caps += [s.limits.memory_mb for s in policy.doc.skills.values() if s.limits.memory_mb]
    return WorkerSettings(
        count=section.count,
        grace_ms=section.grace_ms,
        max_open_files=section.max_open_files,
        landlock=section.landlock,
        seccomp=section.seccomp,
        max_memory_mb=max(caps),
        read_paths=tuple(sorted(read)),
        write_paths=tuple(write),
    )


def pool_for_kernel(
    executors: MutableMapping[str, Any], policy: Any, *, skill_folders: Iterable[Path] = ()
) -> WorkerPool | None:
    """Wrap the kernel's built-in sandboxed executors in a worker pool (``isolation =
    "process"``); returns the pool, or ``None`` when no such executor is registered."""
    from bastion.cachedir import default_cache_root

    from .proxy import wrap_executors

    settings = settings_from_policy(policy, skill_folders=skill_folders)
    return wrap_executors(executors, settings, cache_root=default_cache_root())
