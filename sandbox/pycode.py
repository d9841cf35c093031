"""Compiled entry modules of Python skills: made once in a no-grant sandbox, kept in memory.

A Python call used to read and compile its entry file inside the guest every time (each file
operation is a WASI round trip through the host, the compile runs in a cold instance): about a
millisecond of a hello call. ``CodeCache.fill`` instead runs the runner's ``compile-module``
export in a fresh store with no grants (no mounts, no network, no secrets, a short deadline, a
memory cap): it only *compiles* the source, no line of the skill runs, so what comes back is
the code object of exactly those bytes, marshalled by the guest's own interpreter (the host
never compiles a skill: its Python is another version, and compiling is the guest's job).

The result lives in this process's memory only (never on disk, never in another process),
keyed by the skill's name and its entry path, together with the source bytes it was compiled
from. ``context_code`` hands it to a call only if the entry file's bytes *now* are exactly
those bytes and no package directory of the same name shadows the file; otherwise the call
reads and compiles the file in the guest as before. So a cached code object never serves
another skill, never outlives a change of the source, and nothing a skill does can write it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final, final

from wasmtime.component import Component

from bastion.errors import ExecutionError
from bastion.executor import ExecutionRequest, Limits

from .component_call import call_export
from .component_exec import outcome_text
from .store import Sandbox

__all__ = [
    "COMPILE_EXPORT",
    "COMPILE_MEMORY_MB",
    "COMPILE_TIMEOUT_MS",
    "MAX_CACHED_SOURCE",
    "CodeCache",
]

COMPILE_EXPORT: Final[str] = "compile-module"
MAX_CACHED_SOURCE: Final[int] = 256 * 1024
"""Entry files larger than this are compiled by each call, as before (rare, and slow anyway)."""
COMPILE_TIMEOUT_MS: Final[int] = 3000
COMPILE_MEMORY_MB: Final[int] = 128
_OUTPUT_KB: Final[int] = 4096
_MAX_ENTRIES: Final[int] = 256


@dataclass(frozen=True, slots=True)
class _Compiled:
    source: bytes
    display: str
    code_b64: str


def _read(entry: Path) -> bytes | None:
    try:
        with entry.open("rb") as f:
            raw = f.read(MAX_CACHED_SOURCE + 1)
    except OSError:
        return None
    return raw if len(raw) <= MAX_CACHED_SOURCE else None


def _shadowed(entry: Path) -> bool:
    """Whether the guest's finder would load a package ``NAME/__init__.py`` instead of
    ``NAME.py`` (it looks for the package first)."""
    if entry.name == "__init__.py":
        return False
    return (entry.with_suffix("") / "__init__.py").exists()


@final
class CodeCache:
    """Per-process cache of compiled entry modules; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[tuple[str, str], _Compiled] = {}

    @staticmethod
    def _key(request: ExecutionRequest) -> tuple[str, str]:
        return request.skill, str(request.entry)

    def context_code(self, request: ExecutionRequest) -> dict[str, str] | None:
        """``{display name: base64 code}`` for this call's entry if its current bytes are the
        compiled ones, else None (the guest then compiles the file itself)."""
        item = self._items.get(self._key(request))
        if item is None:
            return None
        if _read(request.entry) != item.source or _shadowed(request.entry):
            return None
        return {item.display: item.code_b64}

    def needs(self, request: ExecutionRequest) -> bool:
        """Whether ``fill`` would compile something new for this call's entry."""
        item = self._items.get(self._key(request))
        raw = _read(request.entry)
        return raw is not None and (item is None or item.source != raw)

    def fill(self, request: ExecutionRequest, entry_rel: str, runner: Component) -> bool:
        """Compile the entry in a no-grant sandbox and keep the code; False if it was not
        cached (too large, not UTF-8, a syntax error: each call then reports it as before)."""
        raw = _read(request.entry)
        if raw is None or _shadowed(request.entry):
            return False
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return False
        limits = Limits(
            timeout_ms=COMPILE_TIMEOUT_MS, memory_mb=COMPILE_MEMORY_MB, output_kb=_OUTPUT_KB
        )
        try:
            with Sandbox(
                skill=request.skill,
                stdin=b"",
                limits=limits,
                deadline=time.monotonic() + COMPILE_TIMEOUT_MS / 1000,
            ) as sandbox:
                outcome = call_export(sandbox, runner, COMPILE_EXPORT, text, entry_rel)
                ok, code_b64 = outcome_text(outcome, sandbox)
        except ExecutionError:
            return False
        if not ok or not code_b64.isascii():
            return False
        with self._lock:
            if len(self._items) >= _MAX_ENTRIES:
                self._items.pop(next(iter(self._items)))
            self._items[self._key(request)] = _Compiled(raw, entry_rel, code_b64)
        return True

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
