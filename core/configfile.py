"""Reading operator and author TOML files with size caps and readable errors.

Shared by the manifest and policy loaders so both report a bad file the same way: the file,
the line or field, what was wrong (quoting the value) and the fix.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .errors import ConfigError

__all__ = ["MAX_CONFIG_BYTES", "config_error_from_validation", "read_toml", "read_toml_text"]

MAX_CONFIG_BYTES = 256 * 1024
"""A manifest or policy larger than this is refused before parsing (it is never legitimate)."""


def read_toml(path: Path, error: type[ConfigError]) -> dict[str, Any]:
    """Read a TOML file, refusing huge, unreadable or non-UTF-8 files with ``error``."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise error(
            f"cannot read the file ({exc.strerror or exc})",
            source=str(path),
            fix="check that the file exists and is readable",
        ) from None
    if size > MAX_CONFIG_BYTES:
        raise error(
            f"the file is {size} bytes, over the {MAX_CONFIG_BYTES}-byte limit",
            source=str(path),
            fix="a manifest or policy is a few kilobytes: check the file",
        )
    try:
        # Read at most one byte past the cap: a device or FIFO reports size 0 and never ends.
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise error(
                f"the file holds more than the {MAX_CONFIG_BYTES}-byte limit",
                source=str(path),
                fix="a manifest or policy is a few kilobytes: check the file",
            )
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(
            f"the file is not valid UTF-8 (byte {exc.start})",
            source=str(path),
            fix="save the file as UTF-8",
        ) from None
    except OSError as exc:
        raise error(f"cannot read the file ({exc})", source=str(path)) from None
    return read_toml_text(text, error, source=str(path))


def read_toml_text(text: str, error: type[ConfigError], *, source: str) -> dict[str, Any]:
    """Parse TOML text; a syntax error names the line and column tomllib reports."""
    if len(text) > MAX_CONFIG_BYTES:
        raise error(f"the text is over the {MAX_CONFIG_BYTES}-byte limit", source=source)
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise error(
            "the TOML is nested too deeply to read",
            source=source,
            fix="a manifest or policy nests a few levels: check the file",
        ) from None
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        where = None
        if "(at line" in msg:
            msg, _, pos = msg.partition(" (at ")
            where = pos.rstrip(")")
        raise error(
            f"TOML syntax error: {msg}",
            source=source,
            where=where,
            fix="correct the TOML syntax at that position",
        ) from None


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


_FIXES = {
    "extra_forbidden": "remove the key or check its spelling",
    "missing": "add the key",
    "string_type": "use a quoted string",
    "int_type": "use a whole number",
    "int_parsing": "use a whole number",
    "bool_type": "use true or false",
    "list_type": "use a list: [ ... ]",
    "dict_type": "use a table",
    "literal_error": "use one of the allowed values",
    "string_pattern_mismatch": "follow the pattern",
    "greater_than_equal": "use a larger value",
    "less_than_equal": "use a smaller value",
    "greater_than": "use a larger value",
}


def config_error_from_validation(
    exc: ValidationError, error: type[ConfigError], *, source: str, prefix: str = ""
) -> ConfigError:
    """Turn pydantic's errors into one ConfigError naming each field, its value and a fix."""
    parts: list[str] = []
    first_where: str | None = None
    first_fix: str | None = None
    for err in exc.errors(include_url=False)[:8]:
        where = _loc(tuple(err["loc"]))
        if prefix:
            where = f"{prefix}.{where}" if where != "(top level)" else prefix
        first_where = first_where or where
        value = err.get("input")
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        kind = err["type"]
        if kind == "missing":
            parts.append(f"{where}: required key is missing")
        else:
            parts.append(f"{where}: {msg} (got {shown})")
        first_fix = first_fix or _FIXES.get(kind)
    more = len(exc.errors()) - 8
    if more > 0:
        parts.append(f"... and {more} more")
    return error("; ".join(parts), source=source, where=first_where, fix=first_fix)
