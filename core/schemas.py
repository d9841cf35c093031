"""A pack's JSON Schemas as data: local references only, linear-time patterns, bounded work.

A schema comes from a stranger. The stock validator would follow a ``$ref`` to any URL or file
and evaluate ``pattern`` with Python's backtracking ``re`` (seconds of host CPU for one string).
Here a schema is checked once at discovery (:func:`check_schema_document`: size, depth, every
reference resolvable inside the document, every regex accepted by RE2, no reference cycle that
never consumes input), and validated per call by :class:`SchemaValidator`: a Draft 2020-12
validator whose registry cannot retrieve anything, whose regexes run on RE2 (linear time), whose
``uniqueItems`` and ``unevaluated*`` are linear, and whose work per call is counted and capped.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any, Final, final

import re2
from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema._utils import extras_msg, find_evaluated_item_indexes_by_schema
from jsonschema.exceptions import ValidationError
from re2 import _re2
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable
from referencing.jsonschema import DRAFT202012

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


class _BudgetExceeded(Exception):
    """Raised inside validation when the call has used up its keyword evaluations."""


@final
class _Budget:
    __slots__ = ("left", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit


_BUDGET: ContextVar[_Budget | None] = ContextVar("bastion_schema_budget", default=None)


def _charge(steps: int = 1) -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.left -= steps
        if budget.left < 0:
            raise _BudgetExceeded


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


# -- keywords -------------------------------------------------------------------------------

_Keyword = Callable[[Any, Any, Any, Any], Iterable[ValidationError] | None]


def _pattern(validator: Any, patrn: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string"):
        _charge(1 + len(instance) // 4096)
        if not search_pattern(patrn, instance):
            yield ValidationError(f"{_short(instance)} does not match {patrn!r}")


def _pattern_properties(
    validator: Any, patterns: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for patrn, subschema in patterns.items():
        _charge(len(instance))
        for key, value in instance.items():
            if search_pattern(patrn, key):
                yield from validator.descend(value, subschema, path=key, schema_path=patrn)


def _extras(instance: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    _charge(len(instance) * max(1, len(patterns)))
    return [
        key
        for key in instance
        if key not in properties and not any(search_pattern(p, key) for p in patterns)
    ]


def _additional_properties(
    validator: Any, ap: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    """Stock ``additionalProperties`` with the pattern check on RE2."""
    if not validator.is_type(instance, "object"):
        return
    extras = _extras(instance, schema)
    if validator.is_type(ap, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], ap, path=extra)
    elif not ap and extras:
        if "patternProperties" in schema:
            verb = "does" if len(extras) == 1 else "do"
            joined = ", ".join(repr(each) for each in sorted(extras))
            patterns = ", ".join(repr(each) for each in sorted(schema["patternProperties"]))
            yield ValidationError(f"{joined} {verb} not match any of the regexes: {patterns}")
        else:
            error = "Additional properties are not allowed (%s %s unexpected)"
            yield ValidationError(error % extras_msg(sorted(extras, key=str)))


def _is_valid(errors: Iterable[ValidationError]) -> bool:
    return next(iter(errors), None) is None


def _evaluated_keys(validator: Any, instance: Any, schema: Any) -> set[str]:
    """Keys evaluated by ``schema`` (for ``unevaluatedProperties``): jsonschema's walk, on RE2
    and a set instead of a list (the stock membership test is quadratic in the object's size)."""
    _charge()
    if validator.is_type(schema, "boolean"):
        return set()
    keys: set[str] = set()
    for keyword in _REF_KEYS:
        ref = schema.get(keyword)
        if ref is not None:
            resolved = validator._resolver.lookup(ref)
            keys |= _evaluated_keys(
                validator.evolve(schema=resolved.contents, _resolver=resolved.resolver),
                instance,
                resolved.contents,
            )
    properties = schema.get("properties")
    if validator.is_type(properties, "object"):
        keys |= properties.keys() & instance.keys()
    for keyword in ("additionalProperties", "unevaluatedProperties"):
        subschema = schema.get(keyword)
        if subschema is not None:
            keys |= {k for k, v in instance.items() if _is_valid(validator.descend(v, subschema))}
    for patrn in schema.get("patternProperties", {}):
        _charge(len(instance))
        keys |= {k for k in instance if search_pattern(patrn, k)}
    for prop, subschema in schema.get("dependentSchemas", {}).items():
        if prop in instance:
            keys |= _evaluated_keys(validator, instance, subschema)
    for keyword in _IN_PLACE_LISTS:
        for subschema in schema.get(keyword, []):
            if _is_valid(validator.descend(instance, subschema)):
                keys |= _evaluated_keys(validator, instance, subschema)
    if "if" in schema:
        if validator.evolve(schema=schema["if"]).is_valid(instance):
            keys |= _evaluated_keys(validator, instance, schema["if"])
            if "then" in schema:
                keys |= _evaluated_keys(validator, instance, schema["then"])
        elif "else" in schema:
            keys |= _evaluated_keys(validator, instance, schema["else"])
    return keys


def _unevaluated_properties(
    validator: Any, up: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    evaluated = _evaluated_keys(validator, instance, schema)
    bad = [
        key
        for key in instance
        if key not in evaluated
        and not _is_valid(validator.descend(instance[key], up, path=key, schema_path=key))
    ]
    if bad:
        if up is False:
            error = "Unevaluated properties are not allowed (%s %s unexpected)"
            yield ValidationError(error % extras_msg(sorted(bad, key=str)))
        else:
            error = "Unevaluated properties are not valid under the given schema (%s %s unexpected)"
            yield ValidationError(error % extras_msg(bad))


def _unevaluated_items(
    validator: Any, ui: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "array"):
        return
    evaluated = set(find_evaluated_item_indexes_by_schema(validator, instance, schema))
    _charge(len(instance))
    extra = [item for index, item in enumerate(instance) if index not in evaluated]
    if extra:
        error = "Unevaluated items are not allowed (%s %s unexpected)"
        yield ValidationError(error % extras_msg(extra))


def _identity(value: Any) -> Any:
    """A hashable key equal for values JSON Schema calls equal (1 == 1.0, True != 1)."""
    if isinstance(value, bool) or value is None:
        return ("b", value)
    if isinstance(value, (int, float)):
        return ("n", int(value) if isinstance(value, float) and value.is_integer() else value)
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, list):
        return ("l", tuple(_identity(v) for v in value))
    if isinstance(value, dict):
        return ("d", frozenset((k, _identity(v)) for k, v in value.items()))
    return ("o", repr(value))


def _unique_items(validator: Any, ui: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    """Linear ``uniqueItems`` (the stock one is quadratic for arrays of objects)."""
    if ui and validator.is_type(instance, "array"):
        _charge(len(instance))
        seen: set[Any] = set()
        for item in instance:
            key = _identity(item)
            if key in seen:
                yield ValidationError(f"{_short(instance)} has non-unique elements")
                return
            seen.add(key)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


_APPLICATORS: Final = frozenset(
    {
        "$ref",
        "$dynamicRef",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
        "if",
        "dependentSchemas",
        "properties",
        "patternProperties",
        "additionalProperties",
        "items",
        "prefixItems",
        "contains",
        "propertyNames",
        "unevaluatedItems",
        "unevaluatedProperties",
    }
)
"""Keywords that evaluate subschemas: each call is charged for the subschemas it may apply
(its own list, and one per member of the instance). Every other keyword does bounded work per
schema node it sits in, and every schema node is reached through one of these."""


def _counted(fn: _Keyword) -> _Keyword:
    """``fn`` charging the call's budget before it runs (no extra generator frame)."""

    def counted(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        steps = 1
        if isinstance(instance, (dict, list)):
            steps += len(instance)
        if isinstance(value, (dict, list)):
            steps += len(value)
        _charge(steps)
        return fn(validator, value, instance, schema)

    counted.__name__ = getattr(fn, "__name__", "keyword")
    return counted


def _regex_format(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    compile_pattern(instance)  # ValueError -> the format check fails
    return True


_FORMATS = FormatChecker(formats=())
_FORMATS.checks("regex", raises=ValueError)(_regex_format)

_KEYWORDS: dict[str, _Keyword] = dict(Draft202012Validator.VALIDATORS)
_KEYWORDS.update(
    pattern=_pattern,
    patternProperties=_pattern_properties,
    additionalProperties=_additional_properties,
    unevaluatedProperties=_unevaluated_properties,
    unevaluatedItems=_unevaluated_items,
    uniqueItems=_unique_items,
)
_Bounded: Any = validators.extend(
    Draft202012Validator,
    validators={n: _counted(fn) if n in _APPLICATORS else fn for n, fn in _KEYWORDS.items()},
    format_checker=_FORMATS,
)


def _refuse(uri: str) -> Resource[Any]:
    """The registry's retrieve function: nothing outside the schema document is ever loaded."""
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]


_CLOSED: Final[Registry[Any]] = Registry(retrieve=_refuse)  # type: ignore[call-arg]


@final
class SchemaValidator:
    """Validates instances against one pack schema with RE2 patterns and a per-call budget.

    ``iter_errors`` evaluates eagerly under the budget and returns the errors found; a value
    that exhausts the budget (or the stack) gets one error saying so instead of the host
    spending unbounded time on it.
    """

    __slots__ = ("_inner", "schema")

    def __init__(self, schema: Mapping[str, Any] | bool) -> None:
        self.schema = schema
        self._inner = _Bounded(schema, registry=_CLOSED, format_checker=_FORMATS)

    def iter_errors(self, instance: Any) -> Iterator[ValidationError]:
        """Every error of ``instance`` (or one error if the work budget ran out)."""
        budget = _Budget(budget_for(instance))
        token = _BUDGET.set(budget)
        try:
            errors = list(self._inner.iter_errors(instance))
        except _BudgetExceeded:
            errors = [
                ValidationError(
                    f"validation stopped after {budget.limit} schema steps: the schema is too "
                    "costly to check against a value this large; send a smaller value"
                )
            ]
        except RecursionError:
            errors = [ValidationError("validation stopped: the schema nests too deeply")]
        except Unresolvable as exc:  # only a schema that skipped discovery's checks gets here
            errors = [ValidationError(f"the schema refers to {_short(exc.ref)}, outside itself")]
        except Exception as exc:
            errors = [ValidationError(f"the schema cannot be evaluated ({type(exc).__name__})")]
        finally:
            _BUDGET.reset(token)
        return iter(errors)

    def is_valid(self, instance: Any) -> bool:
        return _is_valid(self.iter_errors(instance))


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
    resolver = _CLOSED.resolver_with_root(DRAFT202012.create_resource(schema))
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
