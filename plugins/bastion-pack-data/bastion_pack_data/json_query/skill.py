"""Pick values out of a JSON document with a small path language (``items[0].name``)."""

import json
import re
from typing import TypedDict

MAX_DOCUMENT_CHARS = 1_000_000
MAX_DEPTH = 200
MAX_QUERY_CHARS = 1000
MAX_MATCHES = 10_000

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")
_NAME = re.compile(r"[A-Za-z_$@-][A-Za-z0-9_$@-]*")
_INDEX = re.compile(r"\[\s*(-?\d+|\*)\s*\]")
_QUOTED = re.compile(r"""\[\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')\s*\]""")

Step = tuple[str, object]
"""("key", name) | ("index", n) | ("each", None)"""


def _check_depth(document: str) -> None:
    depth = 0
    for bracket in _BRACKETS.findall(_STRING.sub("", document)):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_DEPTH:
            raise ValueError(f"the document is nested more than {MAX_DEPTH} levels deep")


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON value; write null or a number")


def parse_query(query: str) -> list[Step]:
    """Split ``a.b[0][*]["odd key"]`` into steps; raise ValueError at the first bad character."""
    steps: list[Step] = []
    q = query.strip()
    if q.startswith("$"):
        q = q[1:]
    pos = 0
    expect_name = True
    while pos < len(q):
        ch = q[pos]
        if ch == ".":
            pos += 1
            if pos < len(q) and q[pos] == "*":
                steps.append(("each", None))
                pos += 1
                continue
            m = _NAME.match(q, pos)
            if not m:
                raise ValueError(
                    f"expected a key name after '.' at position {pos} of {query[:100]!r}; "
                    'quote unusual keys as ["my key"]'
                )
            steps.append(("key", m.group()))
            pos = m.end()
            continue
        if ch == "[":
            m = _INDEX.match(q, pos)
            if m:
                steps.append(("each", None) if m.group(1) == "*" else ("index", int(m.group(1))))
                pos = m.end()
                continue
            m = _QUOTED.match(q, pos)
            if m:
                raw = m.group(1) if m.group(1) is not None else m.group(2)
                key = re.sub(r"\\(.)", r"\1", raw)
                steps.append(("key", key))
                pos = m.end()
                continue
            raise ValueError(
                f'bad bracket at position {pos} of {query[:100]!r}; write [0], [-1], [*] or ["key"]'
            )
        if expect_name and pos == 0:
            if ch == "*":
                steps.append(("each", None))
                pos += 1
                continue
            m = _NAME.match(q, pos)
            if m:
                steps.append(("key", m.group()))
                pos = m.end()
                continue
        raise ValueError(f"unexpected {ch!r} at position {pos} of {query[:100]!r}")
    return steps


def _apply(values: list[object], step: Step) -> list[object]:
    kind, arg = step
    out: list[object] = []
    for value in values:
        if kind == "key":
            if isinstance(value, dict) and arg in value:
                out.append(value[arg])
        elif kind == "index":
            assert isinstance(arg, int)
            if isinstance(value, list) and -len(value) <= arg < len(value):
                out.append(value[arg])
        elif isinstance(value, list):
            out.extend(value)
        elif isinstance(value, dict):
            out.extend(value.values())
        if len(out) > MAX_MATCHES:
            raise ValueError(f"the query matches more than {MAX_MATCHES} values; narrow it down")
    return out


class QueryResult(TypedDict):
    found: bool
    count: int
    result: object


def run(document: str, query: str) -> QueryResult:
    """Select values from a JSON document with a path query.

    Paths use dots for keys and brackets for list items: "items[0].name", "meta.tags[-1]",
    "items[*].id" (every item), "a.*" (every value of an object), ["odd key"] for keys with
    spaces or dots. "$" or an empty query selects the whole document. Without a wildcard the
    result is the single value found (null and found=false if the path is missing); with one,
    it is the list of every value found.

    Args:
        document: The JSON document, as text.
        query: The path to select, e.g. "items[*].id".
    """
    if len(document) > MAX_DOCUMENT_CHARS:
        raise ValueError(
            f"the document is {len(document)} characters; the limit is {MAX_DOCUMENT_CHARS}"
        )
    if len(query) > MAX_QUERY_CHARS:
        raise ValueError(f"the query is longer than {MAX_QUERY_CHARS} characters")
    steps = parse_query(query)
    _check_depth(document)
    try:
        data = json.loads(document, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"document is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except (RecursionError, ValueError) as exc:
        raise ValueError(f"document is not valid JSON: {str(exc)[:200]}") from None
    values: list[object] = [data]
    for step in steps:
        values = _apply(values, step)
    if any(kind == "each" for kind, _ in steps):
        return {"found": bool(values), "count": len(values), "result": values}
    if not values:
        return {"found": False, "count": 0, "result": None}
    return {"found": True, "count": 1, "result": values[0]}
