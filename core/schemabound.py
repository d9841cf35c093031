"""The jsonschema side of :class:`bastion.schemas.SchemaValidator`: the Draft 2020-12 validator
with RE2 patterns, linear ``uniqueItems`` / ``unevaluated*`` and a counted work budget per call.

Split from ``schemas.py`` so that importing jsonschema (and ``referencing`` and ``attrs`` under
it, ~60 ms) waits until a value is checked that the plain fast path of ``SchemaValidator``
cannot settle, or until a schema holds references (discovery's ``$ref`` resolution).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any, Final, final

from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema._utils import extras_msg, find_evaluated_item_indexes_by_schema
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable
from referencing.jsonschema import DRAFT202012

from .schemas import _IN_PLACE_LISTS, _REF_KEYS, _short, budget_for, compile_pattern, search_pattern

__all__ = ["CLOSED_REGISTRY", "DRAFT202012", "bounded_errors", "bounded_validator"]


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


CLOSED_REGISTRY: Final = _CLOSED
"""A registry that resolves nothing outside the document (discovery's ``$ref`` check)."""


def bounded_validator(schema: Mapping[str, Any] | bool) -> Any:
    """The bounded Draft 2020-12 validator of ``schema`` (closed registry, RE2 formats)."""
    return _Bounded(schema, registry=_CLOSED, format_checker=_FORMATS)


def bounded_errors(inner: Any, instance: Any) -> list[ValidationError]:
    """Every error of ``instance`` under ``inner`` (or one error if the work budget ran out)."""
    budget = _Budget(budget_for(instance))
    token = _BUDGET.set(budget)
    try:
        errors = list(inner.iter_errors(instance))
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
    return errors
