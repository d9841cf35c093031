"""The plain schema check in front of the full validator (``bastion.schemas``): for schemas of
the plain subset, ``SchemaValidator`` answers every value exactly as the full bounded Draft
2020-12 validator does (same errors, same messages), and values outside what it can settle,
or schemas outside the subset, go to the full validator unchanged."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.schemabound import bounded_errors, bounded_validator
from bastion.schemas import SCHEMA_DIALECT, SchemaValidator, _plain_plan

SCALARS = ("string", "integer", "number", "boolean", "null")
NAMES = st.sampled_from(["a", "b", "name", "n", "x y", "é"])
ANNOTATION = st.fixed_dictionaries(
    {},
    optional={"description": st.text(max_size=5), "default": st.integers(), "title": st.just("t")},
)


@st.composite
def plain_schemas(draw: Any) -> dict[str, Any]:
    if draw(st.booleans()):
        return {"type": draw(st.sampled_from(SCALARS)), **draw(ANNOTATION)}
    props = draw(
        st.dictionaries(
            NAMES,
            st.builds(lambda t, a: {"type": t, **a}, st.sampled_from(SCALARS), ANNOTATION),
            max_size=4,
        )
    )
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if draw(st.booleans()):
        schema["$schema"] = SCHEMA_DIALECT
    closed = draw(st.sampled_from([None, True, False]))
    if closed is not None:
        schema["additionalProperties"] = closed
    if props and draw(st.booleans()):
        schema["required"] = draw(st.lists(st.sampled_from(sorted(props)), unique=True))
    return schema


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0.0, 1.0, -3.0, 2.5])
    | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAMES, inner, max_size=4),
    max_leaves=8,
)
OBJECTS = st.dictionaries(NAMES, JSON, max_size=5)


def _messages(errors: Any) -> list[tuple[str, tuple[Any, ...]]]:
    return [(e.message, tuple(e.path)) for e in errors]


@settings(max_examples=400, deadline=None)
@given(plain_schemas(), st.one_of(JSON, OBJECTS))
def test_plain_schemas_answer_as_the_full_validator(schema: dict[str, Any], value: Any) -> None:
    assert _plain_plan(schema) is not None  # the strategy stays inside the subset
    full = bounded_errors(bounded_validator(schema), value)
    assert _messages(SchemaValidator(schema).iter_errors(value)) == _messages(full)


def test_schemas_outside_the_subset_get_the_full_validator() -> None:
    for schema in (
        {"type": "object", "properties": {"a": {"type": "string", "maxLength": 2}}},
        {"type": "object", "properties": {"a": {"$ref": "#/$defs/x"}}, "$defs": {"x": {}}},
        {"type": "object", "additionalProperties": {"type": "string"}},
        {"type": "string", "pattern": "^a"},
        {"type": ["string", "null"]},
        {"type": "object", "$schema": "http://json-schema.org/draft-07/schema#"},
        True,
    ):
        assert _plain_plan(schema) is None, schema
    bounded = {"type": "object", "properties": {"a": {"type": "string", "maxLength": 2}}}
    (err,) = SchemaValidator(bounded).iter_errors({"a": "abc"})
    assert err.message == "'abc' is too long"


def test_integral_floats_and_bools_keep_draft_2020_12_meaning() -> None:
    v = SchemaValidator({"type": "object", "properties": {"n": {"type": "integer"}}})
    assert list(v.iter_errors({"n": 3.0})) == []  # an integral float is an integer
    (err,) = v.iter_errors({"n": True})
    assert err.message == "True is not of type 'integer'"
    (err,) = SchemaValidator({"type": "number"}).iter_errors(False)
    assert err.message == "False is not of type 'number'"
