"""Bounded JSON: parse and check untrusted JSON without recursion crashes or memory blow-ups.

``json.loads`` recurses once per nesting level, so ``[[[[...`` a million deep crashes it (or,
worse, the interpreter). ``loads_bounded`` measures size, nesting depth and item count with a
linear scan *before* parsing, repairs invalid UTF-8 instead of failing on it, and refuses
``NaN``/``Infinity``. With ``strict=True`` (every path *in*: CLI, embedding, the Agent) nothing is
repaired: invalid UTF-8, a lone surrogate, an integer past Python's digit limit or nesting past
the limit is refused with its position and the reason. ``check_value`` applies the same limits
to Python values that native skills return directly, walking them with an explicit stack (a
cycle is reported as too deep).
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
    "dumps_strict",
    "loads_bounded",
]

# A JSON string literal, unrolled so that it is linear (no nested quantifier ambiguity).
_STRING: Final = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET: Final = re.compile(r"[^\[\]{}]+")
_STEP: Final[dict[str, int]] = {"[": 1, "{": 1, "]": -1, "}": -1}
_LONE_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_LONE_ESCAPE: Final = re.compile(
    r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)
_MAX_DIGITS: Final = 4300
"""Python's default ``sys.int_info.default_max_str_digits``: the longest integer JSON may hold."""
_MAX_INT_BITS: Final = int(_MAX_DIGITS * 3.3219280948873626)
_LONG_DIGITS: Final = re.compile(rf"\d{{{_MAX_DIGITS + 1}}}")
_BRACKET_OR_STRING: Final = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


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


def _at(text: str, pos: int) -> str:
    """``line L column C`` of character ``pos`` (1-based, as ``json`` reports them)."""
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"line {line} column {col}"


def _outside_strings(text: str, token: str) -> tuple[int, str] | None:
    """Position and text of the first match of ``token`` outside every JSON string literal."""
    combined = re.compile(_STRING.pattern + "|(?P<tok>" + token + ")", re.DOTALL)
    for m in combined.finditer(text):
        if m.group("tok") is not None:
            return m.start("tok"), m.group("tok")
    return None


def _depth_position(text: str, max_depth: int) -> int:
    """Where the nesting first goes past ``max_depth`` (slow path: only on refusal)."""
    depth = 0
    for m in _BRACKET_OR_STRING.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > max_depth:
                return m.start()
        elif c in "]}":
            depth -= 1
    return 0


def _strict_text(text: str, code: ErrorCode) -> None:
    """Refuse what strict input may not hold: lone surrogates and over-long integers."""
    m = _SURROGATE.search(text)
    if m is not None:
        raise JSONInvalidError(
            code,
            f"input holds a lone surrogate U+{ord(m.group()):04X} at {_at(text, m.start())} "
            "(character " + str(m.start()) + "): not valid Unicode, so not valid UTF-8; "
            "send the text as UTF-8",
        )
    if _LONG_DIGITS.search(text):
        hit = _outside_strings(text, rf"-?\d{{{_MAX_DIGITS + 1},}}")
        if hit is not None:
            raise JSONInvalidError(
                code,
                f"input holds an integer of {len(hit[1].lstrip('-'))} digits at "
                f"{_at(text, hit[0])}, over the limit of {_MAX_DIGITS} digits",
            )


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
    strict: bool = False,
) -> JSONValue:
    """Parse untrusted JSON within limits; every failure is an ``ExecutionError`` with ``code``.

    Bytes are decoded as UTF-8 with invalid sequences replaced by U+FFFD (never an error), a
    leading BOM is ignored, and lone surrogates in the result are replaced by U+FFFD too.
    ``strict`` (input) refuses instead of repairing, naming the position and the reason.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        if len(raw) > max_bytes:
            raise JSONLimitError(
                code, f"JSON is {len(raw)} bytes, over the limit of {max_bytes}", limit="bytes"
            )
        if strict:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise JSONInvalidError(
                    code,
                    f"input is not valid UTF-8: byte {exc.start} (0x{raw[exc.start]:02x}) "
                    f"{exc.reason}; send the text as UTF-8",
                ) from None
        else:
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
        if not strict:
            text = _SURROGATE.sub("\ufffd", text)
    if text.startswith("\ufeff"):
        text = text[1:]
    if strict:
        _strict_text(text, code)
    try:
        _scan(text, max_depth, max_items, code)
    except JSONLimitError as exc:
        if exc.limit != "depth":
            raise
        pos = _depth_position(text, max_depth)
        raise JSONLimitError(code, f"{exc.message} (at {_at(text, pos)})", limit="depth") from None
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise JSONInvalidError(
            code,
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} "
            f"near {_snippet(text, exc.pos)}",
        ) from None
    except (ValueError, RecursionError) as exc:  # NaN/Infinity, over-long integers
        hit = _outside_strings(text, r"-?Infinity|NaN|-?\d+(?:\.\d+)?[eE][+-]?\d+|\d{4301}")
        where = f" at {_at(text, hit[0])}" if hit is not None else ""
        raise JSONInvalidError(code, f"not valid JSON{where}: {exc}"[:300]) from None
    if _LONE_SURROGATE_ESCAPE.search(text):
        if strict:
            m = _LONE_ESCAPE.search(text)
            if m is not None and _find_surrogate(value) is not None:
                raise JSONInvalidError(
                    code,
                    f"input holds a lone surrogate escape {m.group()} at {_at(text, m.start())}: "
                    "not valid Unicode, so not valid UTF-8; escape a whole surrogate pair",
                )
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


def _find_surrogate(value: Any) -> tuple[_Link, int] | None:
    """The path to the first string (or key) holding a lone surrogate, and its index."""
    stack: list[tuple[Any, _Link]] = [(value, None)]
    while stack:
        node, link = stack.pop()
        if isinstance(node, str):
            m = _SURROGATE.search(node)
            if m is not None:
                return link, m.start()
        elif isinstance(node, dict):
            for key, item in node.items():
                if isinstance(key, str) and _SURROGATE.search(key):
                    return (link, key), -1
                stack.append((item, (link, key)))
        elif isinstance(node, (list, tuple)):
            stack.extend((item, (link, i)) for i, item in enumerate(node))
    return None


def _find_big_int(value: Any) -> tuple[_Link, int] | None:
    stack: list[tuple[Any, _Link]] = [(value, None)]
    while stack:
        node, link = stack.pop()
        if isinstance(node, int) and node.bit_length() > _MAX_INT_BITS:
            return link, node.bit_length()
        if isinstance(node, dict):
            stack.extend((item, (link, key)) for key, item in node.items())
        elif isinstance(node, (list, tuple)):
            stack.extend((item, (link, i)) for i, item in enumerate(node))
    return None


def dumps_strict(value: Any, *, code: ErrorCode = ErrorCode.INVALID_INPUT) -> str:
    """Compact JSON text of an input value already passed by ``check_value``; what the encoder
    or UTF-8 cannot take (a lone surrogate, an integer past the digit limit) raises ``code``
    naming where in the value it is."""
    try:
        text = _COMPACT.encode(value)
    except (ValueError, TypeError, RecursionError) as exc:
        big = _find_big_int(value)
        if big is not None:
            raise JSONInvalidError(
                code,
                f"{_where(big[0])} is an integer of about {int(big[1] / 3.32) + 1} digits, over "
                f"the limit of {_MAX_DIGITS} digits",
            ) from None
        raise JSONInvalidError(code, f"cannot write the value as JSON: {exc}"[:300]) from None
    if _SURROGATE.search(text):
        found = _find_surrogate(value)
        where = "a string" if found is None else _where(found[0])
        what = (
            "its key" if found is not None and found[1] < 0 else f"character {found and found[1]}"
        )
        raise JSONInvalidError(
            code,
            f"{where} holds a lone surrogate ({what}): not valid Unicode, so not valid UTF-8; "
            "pass proper text",
        )
    return text


def dumps_compact(value: JSONValue, *, code: ErrorCode = ErrorCode.INVALID_OUTPUT) -> str:
    """Compact JSON text (UTF-8 kept as is, no NaN); a value that is not JSON raises ``code``.

    Call ``check_value`` first on untrusted values: ``json.dumps`` itself recurses.
    """
    try:
        return _COMPACT.encode(value)
    except (ValueError, TypeError, RecursionError) as exc:
        raise JSONInvalidError(code, f"cannot write the value as JSON: {exc}"[:300]) from None
