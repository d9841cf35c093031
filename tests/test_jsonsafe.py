"""Bounded JSON parsing: limits are enforced before parsing, never by crashing."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion import jsonsafe
from bastion.errors import ErrorCode, ExecutionError
from bastion.jsonsafe import (
    JSONInvalidError,
    JSONLimitError,
    check_value,
    dumps_compact,
    loads_bounded,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=40,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


@given(json_values)
def test_round_trips_what_json_would_parse(value: Any) -> None:
    text = json.dumps(value)
    assert loads_bounded(text, max_bytes=len(text.encode()) + 1) == json.loads(text)
    assert loads_bounded(text.encode(), max_bytes=10**7) == json.loads(text)
    assert json.loads(dumps_compact(value)) == value


@given(json_values)
def test_depth_limit_agrees_with_the_real_depth(value: Any) -> None:
    text = json.dumps(value)
    d = depth(value)
    loads_bounded(text, max_bytes=10**7, max_depth=d)
    check_value(value, max_depth=d)
    if d > 0:
        with pytest.raises(JSONLimitError) as exc:
            loads_bounded(text, max_bytes=10**7, max_depth=d - 1)
        assert exc.value.limit == "depth"
        with pytest.raises(JSONLimitError):
            check_value(value, max_depth=d - 1)


@given(st.text(alphabet='[]{}"\\,:', max_size=30), st.integers(1, 8))
def test_brackets_inside_strings_do_not_count(inner: str, d: int) -> None:
    value: Any = [inner] * 3
    for _ in range(d - 1):
        value = [value]
    assert loads_bounded(json.dumps(value), max_bytes=10**6, max_depth=d) == value


def _full_scan_refuses(text: str, max_depth: int, max_items: int) -> bool:
    """The scan without its shortcut: blank strings, then count items and the real depth."""
    skeleton = jsonsafe._STRING.sub("0", text)
    items = skeleton.count(",") + skeleton.count("[") + skeleton.count("{")
    level = deepest = 0
    for c in skeleton:
        level += {"[": 1, "{": 1, "]": -1, "}": -1}.get(c, 0)
        deepest = max(deepest, level)
    return items > max_items or deepest > max_depth


@given(st.text(alphabet='[]{}",\\1 ', max_size=40), st.integers(0, 6), st.integers(0, 12))
def test_the_scan_shortcut_never_lets_through_what_the_full_scan_refuses(
    text: str, max_depth: int, max_items: int
) -> None:
    try:
        jsonsafe._scan(text, max_depth, max_items, ErrorCode.INVALID_OUTPUT)
        refused = False
    except JSONLimitError:
        refused = True
    assert refused == _full_scan_refuses(text, max_depth, max_items)


@pytest.mark.parametrize("opener", ["[", '{"a":', '[{"a":'])
def test_a_million_brackets_are_refused_not_crashing(opener: str) -> None:
    text = opener * 1_000_000
    with pytest.raises(JSONLimitError) as exc:
        loads_bounded(text, max_bytes=len(text) + 1, max_items=10**8)
    assert exc.value.limit == "depth"
    assert exc.value.error_code is ErrorCode.INVALID_OUTPUT


def test_huge_input_is_refused_before_decoding() -> None:
    with pytest.raises(JSONLimitError, match="2000001 bytes, over the limit of 1000"):
        loads_bounded(b" " * 2_000_000 + b"1", max_bytes=1000)
    with pytest.raises(JSONLimitError) as exc:
        loads_bounded("é" * 600, max_bytes=1000, code=ErrorCode.INVALID_INPUT)
    assert exc.value.error_code is ErrorCode.INVALID_INPUT


def test_item_limit() -> None:
    with pytest.raises(JSONLimitError) as exc:
        loads_bounded("[" + ",".join(["1"] * 1001) + "]", max_bytes=10**6, max_items=1000)
    assert exc.value.limit == "items"
    with pytest.raises(JSONLimitError):
        check_value(list(range(1001)), max_items=1000)


@given(st.binary(max_size=200))
def test_invalid_utf8_is_repaired_never_raised(blob: bytes) -> None:
    body = bytes(b for b in blob if b >= 0x20 and b not in b'"\\')
    value = loads_bounded(b'"' + body + b'"', max_bytes=10**6)
    assert value == body.decode("utf-8", errors="replace")
    value.encode("utf-8")


def test_invalid_utf8_and_lone_surrogate_escapes_become_replacement_characters() -> None:
    value = loads_bounded(b'{"k\\udc00": ["\xff\xfe", "\\ud800x"]}', max_bytes=100)
    assert value == {"k\ufffd": ["\ufffd\ufffd", "\ufffdx"]}
    json.dumps(value, ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize(
    "text", ["NaN", "[Infinity]", '{"a": -Infinity}', "1e400", '{"a": [-1.5e999]}', "1E309"]
)
def test_nan_and_infinity_are_refused(text: str) -> None:
    with pytest.raises(JSONInvalidError, match="not valid JSON"):
        loads_bounded(text, max_bytes=100)


@pytest.mark.parametrize("text", ["1.7976931348623157e308", "-2.5e-400", "0.1", "1e-5"])
def test_finite_floats_parse_as_json_does(text: str) -> None:
    assert loads_bounded(text, max_bytes=100) == json.loads(text)


@pytest.mark.parametrize("text", ['{"a": 1', "[1,]", "", "'x'", '{"a" 1}', "1" * 5000])
def test_syntax_errors_are_typed_and_quote_the_place(text: str) -> None:
    with pytest.raises(JSONInvalidError) as exc:
        loads_bounded(text, max_bytes=10**6, code=ErrorCode.INVALID_INPUT)
    assert isinstance(exc.value, ExecutionError)
    assert exc.value.error_code is ErrorCode.INVALID_INPUT


@pytest.mark.parametrize(
    "bad",
    [
        {1: "x"},
        {"a": {1, 2}},
        [math.nan],
        [math.inf],
        {"a": object()},
        b"bytes",
    ],
)
def test_check_value_refuses_values_that_are_not_json(bad: Any) -> None:
    with pytest.raises(JSONInvalidError):
        check_value(bad)
    if not isinstance(bad, dict) or not isinstance(next(iter(bad)), int):  # json allows int keys
        with pytest.raises(JSONInvalidError):
            dumps_compact(bad)


@pytest.mark.parametrize(
    ("bad", "where"),
    [
        (math.nan, "value is nan"),
        ({"a": [1, "x", {"b": (2, math.inf)}]}, "value['a'][2]['b'][1] is inf"),
        ([None, True, 1.5, {"k": {3}}], "value[3]['k'] is a set"),
        ({"ok": 1, "x": {2: 0}}, "value['x'] has the key 2"),
    ],
)
def test_check_value_names_where_the_bad_value_is(bad: Any, where: str) -> None:
    with pytest.raises(JSONInvalidError) as exc:
        check_value(bad, code=ErrorCode.INVALID_INPUT)
    assert exc.value.message.startswith(where)
    assert exc.value.error_code is ErrorCode.INVALID_INPUT


@given(json_values)
def test_check_value_accepts_every_json_value(value: Any) -> None:
    check_value(value, max_depth=10**6, max_items=10**7)
    check_value((value, [value]), max_depth=10**6, max_items=10**7)


def test_a_self_referencing_value_is_too_deep_not_a_recursion_error() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(JSONLimitError, match="refers to itself"):
        check_value(loop)


def test_a_very_deep_python_value_is_checked_without_recursion() -> None:
    value: Any = 0
    for _ in range(200_000):
        value = [value]
    with pytest.raises(JSONLimitError):
        check_value(value, max_depth=64, max_items=10**7)
    check_value(value, max_depth=200_000, max_items=10**7)


def test_dumps_compact_keeps_unicode_and_no_spaces() -> None:
    assert dumps_compact({"k": ["é", 1]}) == '{"k":["é",1]}'
