"""Reading a skill's input from the command line: JSON text, ``@FILE`` or stdin, bounded.

Every source is read with a size cap *before* decoding (``--input @/dev/zero`` reads one byte
past the cap and stops), decoded as strict UTF-8 and parsed by ``jsonsafe.loads_bounded`` with
the kernel's limits, so bad, huge or deep input is a ``ConfigError`` (exit status 2) that names
the position and the reason, never a traceback.
"""

from __future__ import annotations

import os
import stat
import sys
from typing import Any, BinaryIO

from .errors import ConfigError, ErrorCode, ExecutionError
from .jsonsafe import loads_bounded

__all__ = ["INPUT_FIX", "read_capped", "read_input"]

MAX_INPUT_BYTES = 1024 * 1024
"""The kernel's input limit (``kernel.MAX_INPUT_BYTES``), applied before parsing."""
MAX_INPUT_DEPTH = 64
INPUT_FIX = (
    """pass a JSON object, e.g. --input '{"text": "hello"}', --input @FILE or --input - (stdin)"""
)


def read_capped(stream: BinaryIO, cap: int) -> bytes:
    """At most ``cap + 1`` bytes of ``stream`` (one more than allowed tells it was too big)."""
    chunks: list[bytes] = []
    left = cap + 1
    while left > 0:
        chunk = stream.read(min(left, 1 << 16))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _from_file(name: str) -> bytes:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(
            f"cannot read input file {name!r} ({exc.strerror or exc})",
            fix="pass --input @FILE with a readable UTF-8 JSON file",
        ) from None
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError(
            f"input file {name!r} is a directory", fix="pass --input @FILE naming a file"
        )
    with os.fdopen(fd, "rb") as f:
        try:
            return read_capped(f, MAX_INPUT_BYTES)
        except OSError as exc:
            raise ConfigError(
                f"cannot read input file {name!r} ({exc.strerror or exc})",
                fix="pass --input @FILE with a readable UTF-8 JSON file",
            ) from None


def _from_stdin() -> bytes:
    try:
        return read_capped(sys.stdin.buffer, MAX_INPUT_BYTES)
    except (OSError, AttributeError, ValueError) as exc:
        raise ConfigError(f"cannot read the input from stdin ({exc})", fix=INPUT_FIX) from None


def read_input(text: str) -> Any:
    """Parse ``--input``: JSON text, ``@FILE``, or ``-``/``@-`` (stdin)."""
    if text in ("-", "@-"):
        data: bytes | str = _from_stdin()
        where = "the input on stdin"
    elif text.startswith("@"):
        data = _from_file(text[1:])
        where = f"input file {text[1:]!r}"
    else:
        data = text
        where = "--input"
    if isinstance(data, bytes) and len(data) > MAX_INPUT_BYTES:
        raise ConfigError(
            f"{where} is over the {MAX_INPUT_BYTES}-byte input limit",
            fix="a skill's input is at most 1 MiB of JSON: check the file",
        )
    try:
        return loads_bounded(
            data,
            max_bytes=MAX_INPUT_BYTES,
            max_depth=MAX_INPUT_DEPTH,
            code=ErrorCode.INVALID_INPUT,
            strict=True,
        )
    except ExecutionError as exc:
        msg = exc.message
        text = f"{where} is {msg}" if msg.startswith("not valid") else f"{where} is refused: {msg}"
        raise ConfigError(text, fix=INPUT_FIX) from None
