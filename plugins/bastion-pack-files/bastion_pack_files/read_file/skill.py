"""Read a text file under the /files mount, bounded, with encoding detection."""

import codecs
import os
from typing import TypedDict

from pathsafe import resolve_inside

MAX_BYTES = 1_000_000
_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _detect(data: bytes, complete: bool) -> tuple[str, str]:
    """Decode ``data``: BOM, then UTF-8, then Windows-1252, then Latin-1 (never fails)."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            return data.decode(name, errors="replace"), name
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        # A read cut in the middle of a character is still UTF-8.
        if not complete and exc.start >= len(data) - 3 and exc.reason == "unexpected end of data":
            return data[: exc.start].decode("utf-8"), "utf-8"
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def _looks_binary(data: bytes) -> bool:
    if not data or data.startswith(tuple(bom for bom, _ in _BOMS)):
        return False
    sample = data[:8192]
    if b"\x00" in sample:
        return True
    controls = sum(1 for b in sample if b < 32 and b not in (9, 10, 12, 13, 27))
    return controls > len(sample) // 10


class FileText(TypedDict):
    path: str
    size: int
    offset: int
    encoding: str
    text: str
    truncated: bool


def run(
    path: str, max_bytes: int = 65536, offset: int = 0, encoding: str | None = None
) -> FileText:
    """Read a text file under /files. Reads at most max_bytes bytes from offset; truncated
    says whether the file goes on. The encoding is detected (BOM, UTF-8, Windows-1252,
    Latin-1) unless given. Binary files are refused.

    Args:
        path: The file: a path inside /files, or a path relative to it.
        max_bytes: The most bytes to read (1 to 1000000).
        offset: Where to start reading, in bytes from the start of the file.
        encoding: The text encoding to use instead of detecting it, e.g. "utf-16".
    """
    if not 1 <= max_bytes <= MAX_BYTES:
        raise ValueError(f"max_bytes must be between 1 and {MAX_BYTES}, got {max_bytes}")
    if offset < 0:
        raise ValueError(f"offset must be 0 or more, got {offset}")
    if encoding is not None:
        try:
            encoding = codecs.lookup(encoding).name
        except LookupError:
            raise ValueError(
                f"unknown encoding {encoding[:50]!r}; use e.g. 'utf-8', 'utf-16' or 'latin-1'"
            ) from None
    real = resolve_inside(path)
    if os.path.isdir(real):
        raise ValueError(f"{path[:200]!r} is a folder; use list_files to see what is in it")
    try:
        with open(real, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            fh.seek(offset)
            data = fh.read(max_bytes)
    except FileNotFoundError:
        raise ValueError(f"file {path[:200]!r} does not exist; use list_files to find it") from None
    except PermissionError:
        raise ValueError(f"file {path[:200]!r} cannot be read (permission denied)") from None
    except OSError as exc:
        raise ValueError(f"file {path[:200]!r} cannot be read ({exc.strerror})") from None
    complete = offset + len(data) >= size
    if encoding is not None:
        text = data.decode(encoding, errors="replace")
    else:
        if _looks_binary(data):
            raise ValueError(f"file {path[:200]!r} looks binary; read_file returns text only")
        text, encoding = _detect(data, complete)
    return {
        "path": real,
        "size": size,
        "offset": offset,
        "encoding": encoding,
        "text": text,
        "truncated": not complete,
    }
