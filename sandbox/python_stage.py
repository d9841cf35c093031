"""What a kernel checks of a Python skill that a worker process will run: no wasmtime needed.

``PythonExecutor.stage`` (and, without building the executor, ``LazyExecutor.stage`` in a
kernel in process mode) reads the skill's source with the same limits as a call, and says
whether the runner is already compiled in the cache: then the worker loads and verifies it,
and this process never imports wasmtime (~20 ms) nor loads the ~40 MB runner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from bastion.errors import ErrorCode, ExecutionError

from .runner_build import runner_cached

__all__ = ["MAX_SOURCE_BYTES", "read_source", "stage"]

MAX_SOURCE_BYTES: Final[int] = 1024 * 1024
"""Largest skill source accepted (a skill is one file)."""


def read_source(entry: Path) -> str:
    """The skill's source text; ``NOT_FOUND`` if it cannot be read, ``SKILL_ERROR`` if it is
    over ``MAX_SOURCE_BYTES`` or not UTF-8."""
    try:
        with entry.open("rb") as f:
            raw = f.read(MAX_SOURCE_BYTES + 1)
    except OSError as exc:
        raise ExecutionError(
            ErrorCode.NOT_FOUND,
            f"skill source {entry.name!r} cannot be read",
            detail=f"{entry}: {exc}",
        ) from None
    if len(raw) > MAX_SOURCE_BYTES:
        raise ExecutionError(
            ErrorCode.SKILL_ERROR,
            f"skill source {entry.name!r} is larger than {MAX_SOURCE_BYTES} bytes",
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ExecutionError(
            ErrorCode.SKILL_ERROR,
            f"skill source {entry.name!r} is not UTF-8 (byte {exc.start})",
        ) from None


def stage(entry: Path) -> bool:
    """``prepare`` for calls a worker runs: check the source is readable; True if the runner is
    already compiled in the cache, so this process need not load it (the worker loads and
    verifies it; a miss is repaired). On False, the executor's ``prepare`` follows."""
    read_source(entry)
    return runner_cached()
