"""Naming compile-cache entries without wasmtime: the key, the miss error, the version lookup.

A kernel whose skills run in worker processes only asks whether an entry exists (the worker
loads and verifies it); for that it needs the key, sha256(kind + wasm sha256 +
``engine_fingerprint()``), and the fingerprint names the installed wasmtime version. Both come
from here, so that question costs no ``import wasmtime`` (~20 ms) nor ``importlib.metadata``
(~10 ms in a worker). ``cache.py`` loads, verifies and writes the entries.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path
from typing import Final, Literal

from bastion.errors import ErrorCode, ExecutionError

__all__ = ["CacheMissError", "Kind", "cache_key", "installed_version"]

Kind = Literal["module", "component"]
_MAX_METADATA_BYTES: Final[int] = 1 << 20


class CacheMissError(ExecutionError):
    """A load-only cache (a worker's) lacks a verified entry it needs: missing, corrupt, or the
    folder gone or unreadable. The kernel answers it by repairing the disk (``restore``)."""

    def __init__(self, kind: str, key: str, reason: str) -> None:
        super().__init__(
            ErrorCode.INTERNAL,
            "the compile cache lacks what the skill needs (it is repaired by the kernel)",
            detail=f"{kind} {key[:16]}: {reason}"[:2000],
        )
        self.kind = kind
        self.key = key
        self.reason = reason


def cache_key(kind: str, wasm_sha256: str, fingerprint: str) -> str:
    """Cache key of the wasm whose sha256 is ``wasm_sha256``, compiled as ``kind`` by an
    engine with ``fingerprint``."""
    return hashlib.sha256(f"{kind}\0{wasm_sha256}\0{fingerprint}".encode()).hexdigest()


def _version_beside(package: str) -> str | None:
    """The ``Version`` of the ``*.dist-info`` installed beside the importable ``package`` (the
    one Python would import), read without importing it; None if there is none or several."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    site = Path(next(iter(spec.submodule_search_locations))).parent
    found = [d for d in site.glob(f"{package}-*.dist-info") if d.is_dir()]
    if len(found) != 1:
        return None
    try:
        with (found[0] / "METADATA").open("rb") as f:
            head = f.read(_MAX_METADATA_BYTES)
    except OSError:
        return None
    for raw in head.split(b"\n"):
        line = raw.decode("utf-8", "replace").rstrip("\r")
        if not line:
            break  # the headers end at the first empty line
        if line.startswith("Version:"):
            return line.partition(":")[2].strip() or None
    return None


@functools.cache
def installed_version(package: str) -> str:
    """The installed version of the distribution ``package`` (a top-level package of the same
    name, e.g. ``wasmtime``), as ``importlib.metadata.version`` gives it.

    Read from the ``METADATA`` of the one ``*.dist-info`` beside the package Python imports;
    when that is not clear (no such folder, several), ``importlib.metadata`` decides."""
    found = _version_beside(package)
    if found is not None:
        return found
    from importlib.metadata import version

    return version(package)
