"""A pack's JSON Schemas as data: local references only, linear-time patterns, bounded work.

A schema comes from a stranger. The stock validator would follow a ``$ref`` to any URL or file
and evaluate ``pattern`` with Python's backtracking ``re`` (seconds of host CPU for one string).
Here a schema is checked once at discovery (:func:`check_schema_document`: size, depth, every
reference resolvable inside the document, every regex accepted by RE2, no reference cycle that
never consumes input), and validated per call by :class:`SchemaValidator`: a Draft 2020-12
validator whose registry cannot retrieve anything, whose regexes run on RE2 (linear time), whose
``uniqueItems`` and ``unevaluated*`` are linear, and whose work per call is counted and capped
(``schemabound.py``, imported on first need).

Most tool schemas are flat: an object of named scalars. For those, ``SchemaValidator`` first
asks a plain check that can only say "valid"; any other answer (an error, a keyword it does not
know) goes to the full validator, so every refusal and its message is the full validator's.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final, final

import re2
from re2 import _re2

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

__all__ = [
    "MAX_PATTERN_CHARS",
    "MAX_SCHEMA_DEPTH",
    "MAX_SCHEMA_NODES",
    "SCHEMA_DIALECT",
    "SchemaValidator",
    "budget_for",
    "check_schema_document",
    "compile_pattern",
    "search_pattern",
]

SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
MAX_SCHEMA_DEPTH: Final = 32
"""Objects and arrays nested deeper than this in one schema are refused at discovery."""
MAX_SCHEMA_NODES: Final = 20_000
"""Objects, arrays and values in one schema; a tool schema has a few hundred."""
MAX_PATTERN_CHARS: Final = 2_048
"""Longest ``pattern`` / ``patternProperties`` key (RE2 also caps the compiled program)."""
_RE2_MAX_MEM: Final = 8 << 20
"""RE2 memory budget per compiled pattern (program and DFA cache)."""
_BUDGET_BASE: Final = 20_000
_BUDGET_PER_NODE: Final = 200
_BUDGET_MAX: Final = 4_000_000
"""Subschema applications allowed per validation: base + per instance node, capped."""
_REF_KEYS: Final = ("$ref", "$dynamicRef")
_IN_PLACE_LISTS: Final = ("allOf", "anyOf", "oneOf")
_IN_PLACE_ONE: Final = ("not", "if", "then", "else")


# -- RE2 ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2048)
def compile_pattern(pattern: str) -> Any:
    """``pattern`` compiled by RE2 (linear-time matching); raises ValueError naming the fault.

    The extension object ``re2._re2.RE2`` is used directly: google-re2's Python ``search``
    wrapper costs ~9 us a call on short strings, the object's ``Match`` ~0.6 us (``re``: 1.4).
    """
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"is {len(pattern)} characters long; the limit is {MAX_PATTERN_CHARS}")
    options = re2.Options()
    options.max_mem = _RE2_MAX_MEM
    options.log_errors = False  # RE2 would write every refusal to the host's stderr
    options.never_capture = True  # a yes/no search needs no submatches
    try:
        compiled = _re2.RE2(pattern.encode("utf-8"), options)
    except UnicodeEncodeError:
        raise ValueError("holds a lone surrogate, which no regex engine can match") from None
    if not compiled.ok():
        raw = compiled.error()
        reason = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        raise ValueError(f"cannot be run in linear time by RE2 ({reason})")
    return compiled


_UNANCHORED: Final = _re2.RE2.Anchor.UNANCHORED


def search_pattern(pattern: str, text: str) -> bool:
    """Whether ``pattern`` matches anywhere in ``text`` (JSON Schema's ``pattern`` semantics)."""
    try:
        compiled = compile_pattern(pattern)
    except ValueError:
        return False  # refused at discovery; a schema that skipped discovery never matches
    data = text.encode("utf-8", "surrogatepass")
    return bool(compiled.Match(_UNANCHORED, data, 0, len(data))[0] != (-1, -1))


# -- work budget ----------------------------------------------------------------------------


def _count_nodes(instance: Any) -> int:
    """Values in a JSON instance (iteratively; instances are depth-checked before this)."""
    count, stack = 0, [instance]
    while stack:
        value = stack.pop()
        count += 1
        if isinstance(value, dict):
            stack.extend(value.values())
            count += len(value)  # keys are matched against patterns too
        elif isinstance(value, list):
            stack.extend(value)
    return count


def budget_for(instance: Any) -> int:
    """Keyword evaluations one validation of ``instance`` may take."""
    return min(_BUDGET_MAX, _BUDGET_BASE + _BUDGET_PER_NODE * _count_nodes(instance))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


@final
class SchemaValidator:
    """Validates instances against one pack schema with RE2 patterns and a per-call budget.

    ``iter_errors`` evaluates eagerly under the budget and returns the errors found; a value
    that exhausts the budget (or the stack) gets one error saying so instead of the host
    spending unbounded time on it. A schema in the plain subset (``_plain_plan``) first gets
    the plain check: a value it accepts has no error under the full validator either (the
    subset's keywords are evaluated exactly as Draft 2020-12 does, within a few steps per
    member); anything else is decided by the full validator, built on first need.
    """

    __slots__ = ("_inner", "_plan", "schema")

    def __init__(self, schema: Mapping[str, Any] | bool) -> None:
        self.schema = schema
        self._plan = _plain_plan(schema)
        self._inner: Any = None

    def iter_errors(self, instance: Any) -> Iterator[ValidationError]:
        """Every error of ``instance`` (or one error if the work budget ran out)."""
        if self._plan is not None and _plainly_valid(self._plan, instance):
            return iter(())
        from .schemabound import bounded_errors, bounded_validator

        inner = self._inner
        if inner is None:
            inner = self._inner = bounded_validator(self.schema)
        return iter(bounded_errors(inner, instance))

    def is_valid(self, instance: Any) -> bool:
        return next(self.iter_errors(instance), None) is None


# -- the plain subset -----------------------------------------------------------------------

_ANNOTATIONS: Final = frozenset(
    {"title", "description", "default", "examples", "$comment", "deprecated", "readOnly",
     "writeOnly"}
)  # fmt: skip
"""Keywords that never make a value invalid."""
_SCALARS: Final = frozenset({"string", "integer", "number", "boolean", "null"})
_OBJECT_KEYS: Final = _ANNOTATIONS | {
    "$schema", "type", "properties", "additionalProperties", "required"
}  # fmt: skip
_SCALAR_KEYS: Final = _ANNOTATIONS | {"$schema", "type"}


@final
class _Plan:
    """A schema of the plain subset: a scalar ``kind``, or ``"object"`` with scalar-typed
    ``properties``, ``required`` names and a boolean ``additionalProperties``."""

    __slots__ = ("closed", "kind", "props", "required")

    def __init__(
        self, kind: str, props: dict[str, str], required: tuple[str, ...], closed: bool
    ) -> None:
        self.kind = kind
        self.props = props
        self.required = required
        self.closed = closed


def _scalar_kind(node: Any, keys: frozenset[str]) -> str | None:
    """The ``type`` of a node that holds only ``keys`` and a scalar type, else None."""
    if not isinstance(node, dict) or any(k not in keys for k in node):
        return None
    kind = node.get("type")
    return kind if isinstance(kind, str) and kind in _SCALARS else None


def _plain_plan(schema: Any) -> _Plan | None:
    """The plan of ``schema`` if it is in the plain subset, else None (full validation)."""
    if not isinstance(schema, dict):
        return None
    dialect = schema.get("$schema", SCHEMA_DIALECT)
    if not isinstance(dialect, str) or dialect.rstrip("#") != SCHEMA_DIALECT:
        return None
    kind = _scalar_kind(schema, _SCALAR_KEYS)
    if kind is not None:
        return _Plan(kind, {}, (), False)
    if schema.get("type") != "object" or any(k not in _OBJECT_KEYS for k in schema):
        return None
    raw_props = schema.get("properties", {})
    closed = schema.get("additionalProperties", True)
    required = schema.get("required", [])
    if not isinstance(raw_props, dict) or not isinstance(closed, bool):
        return None
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        return None
    props: dict[str, str] = {}
    for name, sub in raw_props.items():
        sub_kind = _scalar_kind(sub, _ANNOTATIONS | {"type"})
        if not isinstance(name, str) or sub_kind is None:
            return None
        props[name] = sub_kind
    return _Plan("object", props, tuple(required), not closed)


def _is_kind(kind: str, value: Any) -> bool:
    """Draft 2020-12's ``type`` for JSON values, narrowed: True only where it surely holds
    (an integral float is left to the full validator)."""
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    if isinstance(value, bool):
        return False
    if kind == "integer":
        return isinstance(value, int)
    return kind == "number" and isinstance(value, (int, float))


def _plainly_valid(plan: _Plan, instance: Any) -> bool:
    """True if ``instance`` is valid under the plan's schema; False means "not decided here"."""
    if plan.kind != "object":
        return _is_kind(plan.kind, instance)
    if not isinstance(instance, dict):
        return False
    for name in plan.required:
        if name not in instance:
            return False
    props = plan.props
    for key, value in instance.items():
        kind = props.get(key) if isinstance(key, str) else None
        if kind is None:
            if plan.closed or not isinstance(key, str):
                return False
        elif not _is_kind(kind, value):
            return False
    return True


# -- discovery-time checks ------------------------------------------------------------------


def _pointer(parts: tuple[str | int, ...]) -> str:
    if not parts:
        return "(root)"
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _walk(schema: Any) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """Every value in the document with its location, iteratively, refusing size and depth."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), schema)]
    count = 0
    while stack:
        loc, node = stack.pop()
        count += 1
        if count > MAX_SCHEMA_NODES:
            raise ValueError(
                f"has more than {MAX_SCHEMA_NODES} values; a tool schema needs far fewer "
                "(split the skill, or use $defs for repeated parts)"
            )
        if len(loc) > MAX_SCHEMA_DEPTH:
            raise ValueError(
                f"nests deeper than {MAX_SCHEMA_DEPTH} levels at {_pointer(loc[:8])}/...; "
                "flatten it or use $defs"
            )
        yield loc, node
        if isinstance(node, dict):
            stack.extend(((*loc, k), v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend(((*loc, i), v) for i, v in enumerate(node))


def _check_keywords(schema: Any) -> list[tuple[str, str, str]]:
    """References found, as ``(location, keyword, target)``; raises on bad regexes,
    embedded ``$id`` and foreign ``$schema``. Every object is checked, wherever it sits: a
    ``$ref`` may point at any location, which then counts as a schema."""
    refs: list[tuple[str, str, str]] = []
    for loc, node in _walk(schema):
        if not isinstance(node, dict):
            continue
        where = _pointer(loc)
        for key in _REF_KEYS:
            target = node.get(key)
            if isinstance(target, str):
                refs.append((where, key, target))
        patterns: list[tuple[str, Any]] = []
        if "pattern" in node:
            patterns.append(("pattern", node["pattern"]))
        if isinstance(node.get("patternProperties"), dict):
            patterns += [("patternProperties key", k) for k in node["patternProperties"]]
        for what, patrn in patterns:
            if isinstance(patrn, str):
                try:
                    compile_pattern(patrn)
                except ValueError as exc:
                    raise ValueError(
                        f"{what} {_short(patrn)} at {where} {exc}; rewrite it without "
                        "backreferences, lookaround or possessive quantifiers (RE2 syntax, "
                        "https://github.com/google/re2/wiki/Syntax)"
                    ) from None
        if loc and isinstance(node.get("$id"), str):
            raise ValueError(
                f"$id {_short(node['$id'])} at {where}: embedded schema resources are not "
                "supported (they change where references point); move the schema into $defs "
                "and refer to it as '#/$defs/NAME'"
            )
        dialect = node.get("$schema")
        if isinstance(dialect, str) and (loc or dialect.rstrip("#") != SCHEMA_DIALECT):
            raise ValueError(
                f"$schema {_short(dialect)} at {where}: only draft 2020-12 at the top level is "
                f"supported; write '$schema = \"{SCHEMA_DIALECT}\"' or leave it out"
            )
    return refs


def _check_refs(schema: Any, refs: list[tuple[str, str, str]]) -> dict[str, Any]:
    """Resolve every reference inside the document; the targets by location."""
    if not refs:
        return {}
    from .schemabound import CLOSED_REGISTRY, DRAFT202012

    resolver = CLOSED_REGISTRY.resolver_with_root(DRAFT202012.create_resource(schema))
    targets: dict[str, Any] = {}
    for where, key, target in refs:
        if not target.startswith("#"):
            raise ValueError(
                f"{key} {_short(target)} at {where} points outside the schema; only references "
                "inside the same schema are allowed (e.g. '#/$defs/NAME' or '#anchor'): copy "
                "the referenced schema into $defs"
            )
        try:
            found = resolver.lookup(target).contents
        except Exception:
            found = None
        if not isinstance(found, (dict, bool)):
            raise ValueError(
                f"{key} {_short(target)} at {where} does not resolve inside the schema to a "
                "schema; point it at an existing subschema ('#/$defs/NAME') or a $anchor"
            )
        targets[f"{where}\0{key}"] = found
    return targets


def _check_cycles(schema: Any, targets: Mapping[str, Any]) -> None:
    """Refuse a ``$ref`` loop that applies to the same value without descending into it
    (validation of any input would recurse forever)."""
    edges: dict[int, list[int]] = {}
    for loc, node in _walk(schema):
        if not isinstance(node, dict):
            continue
        where = _pointer(loc)
        out: list[Any] = []
        for key in _REF_KEYS:
            if f"{where}\0{key}" in targets:
                out.append(targets[f"{where}\0{key}"])
        for key in _IN_PLACE_LISTS:
            if isinstance(node.get(key), list):
                out += node[key]
        out += [node[k] for k in _IN_PLACE_ONE if k in node]
        if isinstance(node.get("dependentSchemas"), dict):
            out += list(node["dependentSchemas"].values())
        edges[id(node)] = [id(o) for o in out if isinstance(o, dict)]
    state: dict[int, int] = {}  # 1 = on the current path, 2 = done
    for start in edges:
        if state.get(start):
            continue
        stack: list[tuple[int, Iterator[int]]] = [(start, iter(edges[start]))]
        state[start] = 1
        while stack:
            node_id, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node_id] = 2
                stack.pop()
            elif state.get(child) == 1:
                raise ValueError(
                    "refers to itself through $ref without descending into the value "
                    "(e.g. '$ref: \"#\"' at the top, or two $defs that allOf each other): "
                    "validation would never end; put the reference under properties or items"
                )
            elif not state.get(child):
                state[child] = 1
                stack.append((child, iter(edges.get(child, ()))))


def check_schema_document(schema: Any, what: str) -> None:
    """Refuse at discovery a schema that could load anything, run a slow regex or never end.

    Raises ValueError with a message that names ``what``, the location and the fix.
    """
    try:
        refs = _check_keywords(schema)
        targets = _check_refs(schema, refs)
        _check_cycles(schema, targets)
    except ValueError as exc:
        raise ValueError(f"{what} {exc}") from None
