"""Bounded JSON: parse and check untrusted JSON without recursion crashes or memory blow-ups.

``json.loads`` recurses once per nesting level, so ``[[[[...`` a million deep crashes it (or,
worse, the interpreter). ``loads_bounded`` measures size, nesting depth and item count with a
linear scan *before* parsing, repairs invalid UTF-8 instead of failing on it, and refuses
``NaN``/``Infinity``. ``check_value`` applies the same limits to Python values that native skills
return directly, walking them with an explicit stack (a cycle is reported as too deep).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from typing import Any, Final

from .errors import ErrorCode, ExecutionError
from .executor import JSONValue

__all__ = [
    "JSONInvalidError",
    "JSONLimitError",
    "JSONValue",
    "check_value",
    "dumps_compact",
    "loads_bounded",
]

# A JSON string literal, unrolled so that it is linear (no nested quantifier ambiguity).
_STRING: Final = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET: Final = re.compile(r"[^\[\]{}]+")
_STEP: Final[dict[str, int]] = {"[": 1, "{": 1, "]": -1, "}": -1}
_LONE_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


class JSONLimitError(ExecutionError):
    """JSON text or a value is over a size, depth or item limit; ``limit`` names which."""

    def __init__(self, code: ErrorCode, message: str, *, limit: str) -> None:
        self.limit = limit
        super().__init__(code, message)


class JSONInvalidError(ExecutionError):
    """JSON text does not parse, or a value is not JSON (NaN, a set, a non-string key...)."""


def _snippet(text: str, pos: int) -> str:
    """A short quoted excerpt around ``pos`` for an error message."""
    return repr(text[max(0, pos - 15) : pos + 15])


def _scan(text: str, max_depth: int, max_items: int, code: ErrorCode) -> None:
    """Refuse text nested deeper than ``max_depth`` or holding more than ``max_items`` values.

    Strings are blanked first so brackets inside them do not count; the rest runs at C speed.
    An unterminated string leaves a stray quote behind: the parse that follows reports it.
    Text whose raw bracket and comma counts are already within both limits is let through
    without the scan: blanking strings only removes brackets and commas, never adds them.
    """
    opens = text.count("[") + text.count("{")
    if opens <= max_depth and opens + text.count(",") <= max_items:
        return
    skeleton = _STRING.sub("0", text)
    items = skeleton.count(",") + skeleton.count("[") + skeleton.count("{")
    if items > max_items:
        raise JSONLimitError(
            code,
            f"JSON holds about {items} values, over the limit of {max_items}",
            limit="items",
        )
    brackets = _NOT_BRACKET.sub("", skeleton)
    if not brackets:
        return
    depth = max(itertools.accumulate(_STEP[c] for c in brackets))
    if depth > max_depth:
        raise JSONLimitError(
            code,
            f"JSON is nested {depth} levels deep, over the limit of {max_depth}",
            limit="depth",
        )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    """A JSON number as a float; one too large for a double (``1e400``) would become Infinity,
    which is not JSON and which no model API accepts, so it is refused like ``Infinity``."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:40]} is too large for a double (it would be Infinity)")
    return value


# Built once: ``json.loads``/``json.dumps`` with options construct a new coder per call.
_DECODER: Final = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
_COMPACT: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _repair_surrogates(value: Any) -> Any:
    """Replace lone surrogates (from ``\\ud800`` escapes) with U+FFFD, iteratively."""

    def fix(s: str) -> str:
        return _SURROGATE.sub("\ufffd", s)

    if isinstance(value, str):
        return fix(value)
    stack: list[Any] = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            for i, item in enumerate(node):
                if isinstance(item, str):
                    node[i] = fix(item)
                elif isinstance(item, (list, dict)):
                    stack.append(item)
        elif isinstance(node, dict):
            items = list(node.items())
            node.clear()
            for key, item in items:
                if isinstance(item, str):
                    item = fix(item)
                elif isinstance(item, (list, dict)):
                    stack.append(item)
                node[fix(key)] = item
    return value


def loads_bounded(
    data: bytes | str,
    *,
    max_bytes: int,
    max_depth: int = 64,
    max_items: int = 100_000,
    code: ErrorCode = ErrorCode.INVALID_OUTPUT,
) -> JSONValue:
    """Parse untrusted JSON within limits; every failure is an ``ExecutionError`` with ``code``.

    Bytes are decoded as UTF-8 with invalid sequences replaced by U+FFFD (never an error), a
    leading BOM is ignored, and lone surrogates in the result are replaced by U+FFFD too.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        if len(raw) > max_bytes:
            raise JSONLimitError(
                code, f"JSON is {len(raw)} bytes, over the limit of {max_bytes}", limit="bytes"
            )
        text = raw.decode("utf-8", errors="replace")
    else:
        text = data
        # A str is at most 4 bytes per character in UTF-8: measure only when it could matter.
        if len(text) * 4 > max_bytes:
            size = len(text.encode("utf-8", errors="surrogatepass"))
            if size > max_bytes:
                raise JSONLimitError(
                    code, f"JSON is {size} bytes, over the limit of {max_bytes}", limit="bytes"
                )
        text = _SURROGATE.sub("\ufffd", text)
    if text.startswith("\ufeff"):
        text = text[1:]
    _scan(text, max_depth, max_items, code)
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise JSONInvalidError(
            code,
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} "
            f"near {_snippet(text, exc.pos)}",
        ) from None
    except (ValueError, RecursionError) as exc:  # NaN/Infinity, over-long integers
        raise JSONInvalidError(code, f"not valid JSON: {exc}"[:300]) from None
    if _LONE_SURROGATE_ESCAPE.search(text):
        value = _repair_surrogates(value)
    return value


_Link = tuple[Any, str | int] | None
"""A path as a linked list ``(parent_link, key)``: constant cost per level, unlike tuples."""


def _where(link: _Link, limit: int = 12) -> str:
    keys: list[str | int] = []
    depth = 0
    while link is not None:
        link, key = link
        depth += 1
        keys.append(key)
    keys.reverse()
    shown = keys[:limit]
    text = "value" + "".join(f"[{k}]" if isinstance(k, int) else f"[{k!r}]" for k in shown)
    return text + ("..." if depth > limit else "")


_CONTAINERS: Final = (list, tuple, dict)
_PLAIN: Final = (str, int)  # bool is an int


def _check_scalar(node: Any, link: _Link, code: ErrorCode) -> None:
    """Raise unless ``node`` (neither a container, None, str nor int) is a finite float."""
    if isinstance(node, float):
        if not math.isfinite(node):
            raise JSONInvalidError(code, f"{_where(link)} is {node!r}, which is not JSON")
        return
    raise JSONInvalidError(
        code,
        f"{_where(link)} is a {type(node).__name__} ({repr(node)[:40]}), which is "
        "not JSON; use dict, list, str, int, float, bool or None",
    )


def check_value(
    value: Any,
    *,
    max_depth: int = 64,
    max_items: int = 100_000,
    code: ErrorCode = ErrorCode.INVALID_OUTPUT,
) -> None:
    """Check that a Python value is JSON (dict with str keys, list/tuple, str, int, finite float,
    bool, None) within depth and item limits, without recursion; raise with ``code`` if not.

    Only containers go on the stack; scalars are checked as their container is read.
    """
    if not isinstance(value, _CONTAINERS):
        if value is not None and not isinstance(value, _PLAIN):
            _check_scalar(value, None, code)
        return
    items = 0
    stack: list[tuple[Any, int, _Link]] = [(value, 0, None)]
    while stack:
        node, depth, link = stack.pop()
        depth += 1
        if depth > max_depth:
            raise JSONLimitError(
                code,
                f"{_where(link, 8)} is nested over the limit of {max_depth} "
                "levels (or refers to itself)",
                limit="depth",
            )
        items += len(node)
        if items > max_items:
            raise JSONLimitError(code, f"value holds over {max_items} items", limit="items")
        is_dict = isinstance(node, dict)
        for key, item in node.items() if is_dict else enumerate(node):
            if is_dict and not isinstance(key, str):
                raise JSONInvalidError(
                    code,
                    f"{_where(link)} has the key {key!r} of type "
                    f"{type(key).__name__}; JSON object keys must be strings",
                )
            if item is None or isinstance(item, _PLAIN):
                continue
            if isinstance(item, _CONTAINERS):
                stack.append((item, depth, (link, key)))
            else:
                _check_scalar(item, (link, key), code)


def dumps_compact(value: JSONValue, *, code: ErrorCode = ErrorCode.INVALID_OUTPUT) -> str:
    """Compact JSON text (UTF-8 kept as is, no NaN); a value that is not JSON raises ``code``.

    Call ``check_value`` first on untrusted values: ``json.dumps`` itself recurses.
    """
    try:
        return _COMPACT.encode(value)
    except (ValueError, TypeError, RecursionError) as exc:
        raise JSONInvalidError(code, f"cannot write the value as JSON: {exc}"[:300]) from None
