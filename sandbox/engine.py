"""The process-wide wasmtime engine, configured once.

One ``Engine`` serves every skill: compiled modules are tied to the engine that compiled them,
and the epoch ticker (``ticker.py``) drives a single engine's clock. Its configuration is fixed
the first time ``get_engine()`` runs; ``configure_engine()`` may change it only before that.

Settings and why:

- ``epoch_interruption``: timeouts. A shared ticker increments the epoch every ``TICK_MS``;
  each store traps once its deadline (``deadline_ticks``) has passed.
- ``max_wasm_stack`` (512 KiB): deep recursion traps cleanly instead of exhausting host stack.
- ``memory_reservation`` lowered (64 MiB) with a small guard: by default every instance reserves
  ~4 GiB (+2 GiB guard) of address space; a thread pool of skills would exhaust it.
- ``wasm_component_model``: components and the Python runner use the same engine.
- ``consume_fuel``: off by default (fuel is deterministic but it is not time).

``engine_fingerprint()`` names the wasmtime version and every setting: a serialized module only
loads into an engine with the same version and configuration, so it is part of cache keys.
"""

from __future__ import annotations

import math
import platform
import threading
from dataclasses import asdict, dataclass, replace
from importlib.metadata import version
from typing import Final

import wasmtime

__all__ = [
    "TICK_MS",
    "EngineSettings",
    "configure_engine",
    "deadline_ticks",
    "engine_fingerprint",
    "engine_settings",
    "get_engine",
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
    memory_reservation: int = 64 * _MIB
    memory_guard_size: int = 64 * _KIB
    memory_reservation_for_growth: int = 16 * _MIB
    wasm_component_model: bool = True
    consume_fuel: bool = False
    cranelift_opt_level: str = "speed"
    parallel_compilation: bool = True


_lock = threading.Lock()
_settings = EngineSettings()
_engine: wasmtime.Engine | None = None


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
    return cfg


def get_engine() -> wasmtime.Engine:
    """The process-wide engine, created on first use (thread-safe)."""
    global _engine
    eng = _engine
    if eng is not None:
        return eng
    with _lock:
        if _engine is None:
            _engine = wasmtime.Engine(_make_config(_settings))
        return _engine


def engine_fingerprint() -> str:
    """wasmtime version, host target and every engine setting, as one stable string."""
    parts = [f"wasmtime={version('wasmtime')}", f"machine={platform.machine()}"]
    parts += [f"{k}={v}" for k, v in sorted(asdict(_settings).items())]
    return ";".join(parts)


def deadline_ticks(timeout_ms: float) -> int:
    """Epoch ticks to allow for ``timeout_ms``: ``ceil(T/tick) + 1``.

    The ticker is shared, so its next tick may come at any moment after the store starts; one
    extra tick guarantees the guest never stops before ``timeout_ms``.
    """
    if timeout_ms <= 0:
        return 1
    return math.ceil(timeout_ms / TICK_MS) + 1
