"""Reading files a stranger wrote, with the size and nesting checked before any parser runs.

A pack's manifests and sources are hostile input: a 50 MiB entry file must not be read whole,
a FIFO named ``skill.toml`` must not hang discovery, and a TOML document nested a few thousand
levels deep must not reach ``tomllib`` (whose recursion takes down the whole process's
discovery, not only that pack).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Final

__all__ = [
    "MAX_TOML_DEPTH",
    "MAX_TOML_NESTING",
    "ReadRefused",
    "read_capped",
    "toml_nesting",
    "value_depth",
]

MAX_TOML_NESTING: Final = 32
"""Arrays and inline tables nested inside each other in one TOML document."""
MAX_TOML_DEPTH: Final = 48
"""Tables and arrays nested in the parsed document (dotted keys nest without brackets)."""


class ReadRefused(Exception):
    """A file was not read: too large, not a regular file, or unreadable. ``str`` says why."""


def read_capped(path: Path, cap: int) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``cap`` bytes.

    The size is checked with ``stat`` before opening, and at most ``cap + 1`` bytes are read
    (a file that grows between the two is still refused), so memory stays bounded by ``cap``.
    """
    try:
        st = path.stat()
    except OSError as exc:
        raise ReadRefused(f"cannot read the file ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ReadRefused("it is not a regular file (a device, FIFO or folder?)")
    if st.st_size > cap:
        raise ReadRefused(f"the file is {st.st_size} bytes, over the {cap}-byte limit")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ReadRefused(f"cannot read the file ({exc.strerror or exc})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped between stat and open
            raise ReadRefused("it is not a regular file")
        chunks: list[bytes] = []
        left = cap + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise ReadRefused(f"cannot read the file ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > cap:
        raise ReadRefused(f"the file is over the {cap}-byte limit (it grew while read)")
    return data


def toml_nesting(text: str) -> int:
    """How deeply arrays and inline tables nest in TOML ``text``, by one linear scan.

    Brackets inside strings and comments do not count. The scan is a lexer, not a parser: it
    only has to be right for documents ``tomllib`` would accept, and never slower than linear.
    """
    depth = deepest = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if c in "\"'":
            triple = text.startswith(c * 3, i)
            quote = c * 3 if triple else c
            j = i + len(quote)
            while j < n:
                if c == '"' and text[j] == "\\":
                    j += 2
                    continue
                if text.startswith(quote, j):
                    break
                if not triple and text[j] == "\n":
                    break
                j += 1
            i = j + len(quote)
            if triple:  # up to two more quotes may close a multi-line string
                while i < n and text[i] == c:
                    i += 1
            continue
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth = max(0, depth - 1)
        i += 1
    return deepest


def value_depth(value: Any, limit: int) -> int:
    """Nesting depth of a parsed document (iterative), or ``limit + 1`` once past ``limit``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return limit + 1
        deepest = max(deepest, depth)
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return deepest
