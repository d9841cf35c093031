"""The process-wide wasmtime engine, configured once.

One ``Engine`` serves every skill: compiled modules are tied to the engine that compiled them,
and the epoch ticker (``ticker.py``) drives a single engine's clock. Its configuration is fixed
the first time ``get_engine()`` runs; ``configure_engine()`` may change it only before that.

Settings and why:

- ``epoch_interruption``: timeouts. A shared ticker increments the epoch every ``TICK_MS``;
  each store traps once its deadline (``deadline_ticks``) has passed.
- ``max_wasm_stack`` (512 KiB): deep recursion traps cleanly instead of exhausting host stack.
- ``memory_reservation`` lowered (512 MiB, the policy's default memory cap) with a small guard:
  by default every instance reserves ~4 GiB (+2 GiB guard) of address space; a thread pool of
  skills would exhaust it. It is also the pooling allocator's slot size (below), which must
  hold the largest memory a skill may get.
- ``wasm_component_model``: components and the Python runner use the same engine.
- ``consume_fuel``: off by default (fuel is deterministic but it is not time).
- ``pooling`` (off; a worker process turns it on): wasmtime's pooling instance allocator,
  reached through the C API (``wasmtime_pooling_allocation_*``; wasmtime-py 50 has no
  wrapper), with ``keep_resident`` bytes of each linear memory kept mapped between instances:
  a fresh instance reuses a slot whose pages are already faulted in, instead of taking the
  copy-on-write faults again. Where the kernel allows (``pagewarm.supported()``), ``prefault``
  keeps only 1 MiB resident and the Python executor pre-faults, in one system call, just the
  pages its calls write, instead of wasmtime copying the runner's whole image back per drop.
  Compiled code does not depend on the allocator, so these settings are left out of the
  fingerprint (a cached module loads under either).

``engine_fingerprint()`` names the wasmtime version and every setting: a serialized module only
loads into an engine with the same version and configuration, so it is part of cache keys.
It is computed without importing wasmtime (``cachekey.installed_version``): a kernel whose
workers run the skills names cache entries but never loads one. wasmtime itself is imported
when the engine is first created.
"""

from __future__ import annotations

import atexit
import ctypes
import math
import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Final, cast

from . import pagewarm
from .cachekey import installed_version

if TYPE_CHECKING:
    import wasmtime

__all__ = [
    "ALLOCATOR_ONLY",
    "PREFAULT_KEEP_RESIDENT",
    "TICK_MS",
    "EngineSettings",
    "configure_engine",
    "deadline_ticks",
    "engine_fingerprint",
    "engine_settings",
    "get_engine",
    "keep_resident",
    "prefaulting",
]

TICK_MS: Final[int] = 5
"""Epoch tick period in milliseconds: a skill stops between its timeout and ~2 ticks after."""

_KIB: Final[int] = 1024
_MIB: Final[int] = 1024 * 1024


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """Every ``wasmtime.Config`` setting Bastion changes; all of them go into the fingerprint."""

    epoch_interruption: bool = True
    max_wasm_stack: int = 512 * _KIB
    memory_reservation: int = 512 * _MIB
    memory_guard_size: int = 64 * _KIB
    memory_reservation_for_growth: int = 16 * _MIB
    wasm_component_model: bool = True
    consume_fuel: bool = False
    cranelift_opt_level: str = "speed"
    parallel_compilation: bool = True
    pooling: bool = False
    """The pooling allocator; its slots hold memories up to ``memory_reservation``."""
    pooling_slots: int = 8
    """Linear memories (and component instances) the pool holds at once."""
    keep_resident: int = 24 * _MIB
    """Bytes of a freed linear memory kept resident (reset in place, not unmapped) for the next
    one: 24 MiB holds what a Python call touches (16 MiB left a hello call ~0.3 ms of page
    faults; more only makes the drop reset more). Less moves cost from the drop to page faults
    in the call (a hello call touches only ~520 pages, but each fault costs ~3 us here): the
    CPU per call was flat from 2 to 24 MiB (2.9-3.1 ms), so the size that leaves the call
    itself no faults stays (bench/README.md, wave 4). Used only where ``prefault`` is off or
    unsupported."""
    prefault: bool = True
    """With pooling, release freed memory instead (only ``PREFAULT_KEEP_RESIDENT`` bytes stay)
    and let the Python executor pre-fault, in one system call, the pages its calls write
    (``pagewarm.py``), where the kernel supports it: the drop stops copying the runner's whole
    memory image back."""


ALLOCATOR_ONLY: Final[frozenset[str]] = frozenset(
    {"pooling", "pooling_slots", "keep_resident", "prefault"}
)
"""Settings that choose how instances are allocated, not what is compiled."""


PREFAULT_KEEP_RESIDENT: Final[int] = 1 * _MIB
"""Bytes of each freed memory kept resident while pre-faulting: a small WASM skill's whole
memory (and the runner's stack, below its image) stays fault-free without copying anything big."""

_lock = threading.Lock()
_settings = EngineSettings()
_engine: wasmtime.Engine | None = None
_prefaulting = False


def configure_engine(**changes: object) -> EngineSettings:
    """Change engine settings (e.g. ``consume_fuel=True``) before the engine is first created.

    Raises ``RuntimeError`` once ``get_engine()`` has run: compiled modules and the ticker are
    bound to the existing engine, so it is never replaced.
    """
    global _settings
    with _lock:
        if _engine is not None:
            raise RuntimeError(
                f"engine already created; cannot apply {sorted(changes)!r} "
                "(call configure_engine before the first get_engine)"
            )
        _settings = replace(_settings, **changes)  # type: ignore[arg-type]
        return _settings


def engine_settings() -> EngineSettings:
    """The settings the engine has (or will have when first created)."""
    return _settings


def _make_config(s: EngineSettings) -> wasmtime.Config:
    import wasmtime

    cfg = wasmtime.Config()
    cfg.epoch_interruption = s.epoch_interruption
    cfg.max_wasm_stack = s.max_wasm_stack
    cfg.memory_reservation = s.memory_reservation
    cfg.memory_guard_size = s.memory_guard_size
    cfg.memory_reservation_for_growth = s.memory_reservation_for_growth
    cfg.wasm_component_model = s.wasm_component_model
    cfg.consume_fuel = s.consume_fuel
    cfg.cranelift_opt_level = s.cranelift_opt_level
    cfg.parallel_compilation = s.parallel_compilation
    if s.pooling:
        _set_pooling(cfg, s)
    return cfg


def _pooling_fn(name: str, arg: type) -> Callable[..., None]:
    from wasmtime import _ffi as ffi

    fn = getattr(ffi.dll, f"wasmtime_pooling_allocation_config_{name}_set")
    fn.argtypes = [ctypes.c_void_p, arg]
    fn.restype = None
    return cast(Callable[..., None], fn)


def _set_pooling(cfg: wasmtime.Config, s: EngineSettings) -> None:
    """Switch ``cfg`` to the pooling allocator (raw C API; the config copies the settings)."""
    from wasmtime import _ffi as ffi

    lib = ffi.dll
    lib.wasmtime_pooling_allocation_config_new.restype = ctypes.c_void_p
    lib.wasmtime_pooling_allocation_config_delete.argtypes = [ctypes.c_void_p]
    lib.wasmtime_pooling_allocation_strategy_set.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    pcfg = lib.wasmtime_pooling_allocation_config_new()
    u32, size = ctypes.c_uint32, ctypes.c_size_t
    slots = max(s.pooling_slots, 1)
    try:
        for name, arg, value in (
            ("total_memories", u32, slots * 4),
            ("total_tables", u32, slots * 16),
            ("total_stacks", u32, slots),
            ("total_core_instances", u32, slots * 64),
            ("total_component_instances", u32, slots),
            ("max_memory_size", size, s.memory_reservation),
            ("max_core_instance_size", size, 16 * _MIB),
            ("max_component_instance_size", size, 16 * _MIB),
            ("max_memories_per_component", u32, 16),
            ("max_tables_per_component", u32, 32),
            ("max_core_instances_per_component", u32, 64),
            ("max_memories_per_module", u32, 4),
            ("max_tables_per_module", u32, 16),
            ("table_elements", size, 200_000),
            ("linear_memory_keep_resident", size, keep_resident()),
            ("table_keep_resident", size, 64 * _KIB),
        ):
            _pooling_fn(name, arg)(pcfg, value)
        lib.wasmtime_pooling_allocation_strategy_set(ctypes.cast(cfg.ptr(), ctypes.c_void_p), pcfg)
    finally:
        lib.wasmtime_pooling_allocation_config_delete(pcfg)


def get_engine() -> wasmtime.Engine:
    """The process-wide engine, created on first use (thread-safe)."""
    global _engine
    eng = _engine
    if eng is not None:
        return eng
    global _prefaulting
    with _lock:
        if _engine is None:
            _prefaulting = _settings.pooling and _settings.prefault and pagewarm.supported()
            import wasmtime

            _engine = wasmtime.Engine(_make_config(_settings))
            atexit.register(_release)
        return _engine


def prefaulting() -> bool:
    """True once the engine exists with pooling and page pre-faulting in use (``pagewarm``)."""
    return _prefaulting and _engine is not None


def keep_resident() -> int:
    """Bytes of each freed linear memory the pooling allocator keeps resident."""
    return PREFAULT_KEEP_RESIDENT if _prefaulting else _settings.keep_resident


def _release() -> None:
    """At exit, before the interpreter tears modules down, drop the process's engine: this
    module imports wasmtime on first use, so it is torn down after wasmtime's own modules,
    whose functions the engine's finalizer needs (it would fail, and say so on stderr)."""
    global _engine
    with _lock:
        _engine = None


def engine_fingerprint() -> str:
    """wasmtime version, host target and every engine setting, as one stable string."""
    parts = [f"wasmtime={installed_version('wasmtime')}", f"machine={os.uname().machine}"]
    parts += [f"{k}={v}" for k, v in sorted(asdict(_settings).items()) if k not in ALLOCATOR_ONLY]
    return ";".join(parts)


def deadline_ticks(timeout_ms: float) -> int:
    """Epoch ticks to allow for ``timeout_ms``: ``ceil(T/tick) + 1``.

    The ticker is shared, so its next tick may come at any moment after the store starts; one
    extra tick guarantees the guest never stops before ``timeout_ms``.
    """
    if timeout_ms <= 0:
        return 1
    return math.ceil(timeout_ms / TICK_MS) + 1
