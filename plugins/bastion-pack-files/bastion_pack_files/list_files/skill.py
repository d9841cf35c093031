"""List the files and folders under the /files mount."""

import fnmatch
import os
from typing import Literal, TypedDict

from pathsafe import ROOT, resolve_inside

MAX_ENTRIES = 5000
MAX_SCANNED = 50_000


class Entry(TypedDict):
    path: str
    type: Literal["file", "dir", "link", "other"]
    size: int


class Listing(TypedDict):
    path: str
    entries: list[Entry]
    truncated: bool


def _kind(entry: os.DirEntry[str]) -> Literal["file", "dir", "link", "other"]:
    if entry.is_symlink():
        return "link"
    if entry.is_dir(follow_symlinks=False):
        return "dir"
    if entry.is_file(follow_symlinks=False):
        return "file"
    return "other"


def run(
    path: str = "/files",
    recursive: bool = False,
    pattern: str | None = None,
    max_entries: int = 500,
) -> Listing:
    """List the files and folders in a folder under /files, sorted by path.

    Args:
        path: The folder to list: /files, a path inside it, or a path relative to it.
        recursive: Also list everything in sub-folders (links are listed, never followed).
        pattern: Only list names matching this shell pattern, e.g. "*.md".
        max_entries: The most entries to return (1 to 5000); truncated tells if more exist.
    """
    if not 1 <= max_entries <= MAX_ENTRIES:
        raise ValueError(f"max_entries must be between 1 and {MAX_ENTRIES}, got {max_entries}")
    top = resolve_inside(path)
    if not os.path.isdir(top):
        if os.path.exists(top):
            raise ValueError(f"{path[:200]!r} is a file, not a folder; use read_file to read it")
        raise ValueError(f"folder {path[:200]!r} does not exist; list {ROOT} to see what does")
    entries: list[Entry] = []
    truncated = False
    scanned = 0
    pending = [top]
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(folder) as it:
                items = sorted(it, key=lambda e: e.name)
        except PermissionError:
            raise ValueError(f"folder {folder!r} cannot be read (permission denied)") from None
        except OSError as exc:
            raise ValueError(f"folder {folder!r} cannot be read ({exc.strerror})") from None
        subdirs = []
        for item in items:
            scanned += 1
            if scanned > MAX_SCANNED:
                truncated = True
                pending.clear()
                break
            kind = _kind(item)
            if recursive and kind == "dir":
                subdirs.append(item.path)
            if pattern is not None and not fnmatch.fnmatchcase(item.name, pattern):
                continue
            size = 0
            if kind == "file":
                try:
                    size = item.stat(follow_symlinks=False).st_size
                except OSError:
                    size = 0
            entries.append({"path": item.path, "type": kind, "size": size})
        pending.extend(reversed(subdirs))
    entries.sort(key=lambda e: e["path"])
    if len(entries) > max_entries:
        entries = entries[:max_entries]
        truncated = True
    return {"path": top, "entries": entries, "truncated": truncated}
