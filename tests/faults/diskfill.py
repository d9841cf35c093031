"""Filling a real file system to the last byte (the fault suite's disk-full helper)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fill"]


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the file system holding ``folder`` until at most ``leave`` bytes are free."""
    filler = folder / "filler"
    with open(filler, "ab") as f:
        while True:
            st = os.statvfs(folder)
            free = st.f_bavail * st.f_frsize
            if free <= leave:
                break
            try:
                f.write(b"\0" * max(1, min(free - leave, 1 << 16)))
                f.flush()
            except OSError:
                break
    return filler
