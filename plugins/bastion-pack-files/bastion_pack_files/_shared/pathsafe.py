"""Paths under the /files mount, shared by the files pack's skills (the pack's ``_shared/``).

Every skill of the pack imports this one module (``from pathsafe import ...``): the runner maps
the pack's ``_shared/`` folder read-only beside each skill's own folder.
"""

import os

__all__ = ["ROOT", "resolve_inside"]

ROOT = "/files"


def resolve_inside(path: str) -> str:
    """``path`` (absolute, or relative to /files) resolved inside /files, or ValueError.

    Symbolic links are resolved here, one component at a time, and refused if they lead out
    of /files or cannot be read (the sandbox would refuse them too, less clearly).
    """
    if "\x00" in path:
        raise ValueError("path must not contain NUL characters")
    joined = os.path.normpath(os.path.join(ROOT, path))
    if joined != ROOT and not joined.startswith(ROOT + "/"):
        raise ValueError(
            f"path {path[:200]!r} is outside {ROOT}; give a path inside {ROOT}, "
            f"e.g. '{ROOT}/notes.txt' or 'notes.txt'"
        )
    parts = joined[len(ROOT) :].strip("/").split("/") if joined != ROOT else []
    current = ROOT
    hops = 0
    while parts:
        current = os.path.normpath(os.path.join(current, parts.pop(0)))
        if not os.path.islink(current):
            continue
        hops += 1
        try:
            target = os.readlink(current)
        except OSError:
            raise ValueError(
                f"path {path[:200]!r} goes through a link that leads outside {ROOT}"
            ) from None
        current = os.path.normpath(os.path.join(os.path.dirname(current), target))
        if hops > 40 or (current != ROOT and not current.startswith(ROOT + "/")):
            raise ValueError(f"path {path[:200]!r} goes through a link that leads outside {ROOT}")
        rest = current[len(ROOT) :].strip("/")
        parts = (rest.split("/") if rest else []) + parts
        current = ROOT
    return current
