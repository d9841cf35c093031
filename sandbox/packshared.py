"""A pack's ``_shared/`` folder: the modules a pack's Python skills share, found without wasmtime.

Discovery hashes it into a skill's digest (``pyschema``) and the kernel lets workers read it
(``Kernel``), before anything needs the runner; ``python_skill`` mounts it into the guest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

__all__ = ["SHARED_DIR", "shared_folder"]

SHARED_DIR: Final[str] = "_shared"
_PACK_MANIFEST: Final[str] = "bastion-pack.toml"
_shared_cache: dict[Path, Path | bool] = {}


def shared_folder(skill_folder: Path) -> Path | None:
    """The ``_shared/`` folder of the pack holding ``skill_folder`` (the nearest parent with
    ``bastion-pack.toml``, at most four levels up), or None."""
    cached = _shared_cache.get(skill_folder)
    if cached is not None:
        return cached if isinstance(cached, Path) else None
    found: Path | None = None
    for parent in list(skill_folder.parents)[:4]:
        if (parent / _PACK_MANIFEST).is_file():
            cand = parent / SHARED_DIR
            found = cand if cand.is_dir() and not cand.is_symlink() else None
            break
    if len(_shared_cache) > 4096:
        _shared_cache.clear()
    _shared_cache[skill_folder] = found or False
    return found
