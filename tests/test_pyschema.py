"""Static schema derivation: generated signatures, their values, bad hints, and no execution."""

from __future__ import annotations

import keyword
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.errors import ManifestError
from bastion.pyschema import derive_schema

# -- a small type grammar: each type knows its annotation text and how to make values -----------


@dataclass(frozen=True)
class T:
    """A type of the grammar: annotation source, a value strategy, and a wrong-value strategy."""

    source: str
    values: st.SearchStrategy[Any]
    kind: str  # "str", "int", "float", "bool", "null", "list", "dict", "enum", "union"
    json_kinds: frozenset[str] = frozenset()
    """JSON kinds a union or Literal accepts at its top level (for ``wrong_value``)."""


SCALARS = [
    T("str", st.text(max_size=10), "str"),
    T("int", st.integers(), "int"),
    T("float", st.floats(allow_nan=False, allow_infinity=False) | st.integers(), "float"),
    T("bool", st.booleans(), "bool"),
]


def literal() -> st.SearchStrategy[T]:
    vals = st.lists(
        st.one_of(st.text("abc", max_size=3), st.integers(-3, 3)),
        min_size=1,
        max_size=4,
        unique=True,
    )
    return vals.map(
        lambda vs: T(
            "Literal[" + ", ".join(repr(v) for v in vs) + "]",
            st.sampled_from(vs),
            "enum",
            frozenset("str" if isinstance(v, str) else "number" for v in vs),
        )
    )


_JSON_KIND = {
    "str": "str",
    "int": "number",
    "float": "number",
    "bool": "bool",
    "null": "null",
    "list": "array",
    "dict": "object",
}


def json_kinds(t: T) -> frozenset[str]:
    return t.json_kinds if t.kind in ("union", "enum") else frozenset({_JSON_KIND[t.kind]})


def extend(inner: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    return st.one_of(
        inner.map(lambda t: T(f"list[{t.source}]", st.lists(t.values, max_size=3), "list")),
        inner.map(lambda t: T(f"List[{t.source}]", st.lists(t.values, max_size=3), "list")),
        inner.map(
            lambda t: T(
                f"dict[str, {t.source}]",
                st.dictionaries(st.text(max_size=4), t.values, max_size=3),
                "dict",
            )
        ),
        inner.map(
            lambda t: T(
                f"Optional[{t.source}]", st.none() | t.values, "union", json_kinds(t) | {"null"}
            )
        ),
        inner.map(
            lambda t: T(
                f"{t.source} | None", st.none() | t.values, "union", json_kinds(t) | {"null"}
            )
        ),
        st.tuples(inner, inner).map(
            lambda ab: T(
                f"Union[{ab[0].source}, {ab[1].source}]",
                ab[0].values | ab[1].values,
                "union",
                json_kinds(ab[0]) | json_kinds(ab[1]),
            )
        ),
    )


types = st.recursive(st.sampled_from(SCALARS) | literal(), extend, max_leaves=4)
names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(
    lambda n: (
        not keyword.iskeyword(n)
        and n not in {"run", "str", "int", "float", "bool", "list", "dict", "None"}
    )
)
HEADER = "from typing import Dict, List, Literal, Optional, Union\n\n"


def wrong_value(t: T) -> Any:
    """A value of a JSON type that ``t`` never accepts (None where t has no None).

    For a union or Literal: a value of a JSON kind none of its members accepts at all (a
    ``dict[...]`` member accepts some objects, so an object is never "wrong" for it). With at
    most 4 leaves a union covers at most 4 of str, number, bool, array, object (arrays and
    objects each need a leaf inside), so such a kind always exists."""
    if t.kind in ("union", "enum"):
        for kind, value in (
            ("object", {"not": ["expected"]}),
            ("array", [{"not": "expected"}]),
            ("bool", True),
            ("str", "not expected"),
            ("number", 1.5),
        ):
            if kind not in t.json_kinds:
                return value
        raise AssertionError(f"{t.source} accepts every JSON kind")
    return {
        "str": 1,
        "int": "1",
        "float": "1.5",
        "bool": "true",
        "list": {"a": 1},
        "dict": [1],
        "null": 0,
    }[t.kind]


@settings(max_examples=150, deadline=None)
@given(st.data(), st.dictionaries(names, types, min_size=1, max_size=4))
def test_generated_signatures_accept_their_values_and_reject_wrong_types(
    data: st.DataObject,
    params: dict[str, T],
) -> None:
    sig = ", ".join(f"{n}: {t.source}" for n, t in params.items())
    derived = derive_schema(HEADER + f"def run({sig}):\n    return None\n", "gen.py")
    schema = derived.input_schema
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    value = {n: data.draw(t.values, label=n) for n, t in params.items()}
    assert validator.is_valid(value), (sig, value)
    for n, t in params.items():
        assert not validator.is_valid({**value, n: wrong_value(t)}), (sig, n)
        missing = {k: v for k, v in value.items() if k != n}
        assert not validator.is_valid(missing), f"{n} must be required"
    assert not validator.is_valid({**value, "unexpected_extra": 1})
    assert schema["required"] == list(params)


@given(st.sampled_from(SCALARS), st.data())
def test_defaults_make_parameters_optional_and_are_recorded(t: T, data: st.DataObject) -> None:
    default = data.draw(t.values)
    derived = derive_schema(f"def run(x: {t.source} = {default!r}):\n    pass\n", "d.py")
    assert "required" not in derived.input_schema
    assert derived.input_schema["properties"]["x"]["default"] == default
    assert jsonschema.Draft202012Validator(derived.input_schema).is_valid({})


BAD = [
    ("def run(city): pass", "city", "has no type annotation"),
    ("from typing import Any\ndef run(city: Any): pass", "city", "`Any` is not allowed"),
    ("import typing\ndef run(city: typing.Any): pass", "city", "`Any` is not allowed"),
    ("def run(city: list): pass", "city", "bare `list`"),
    ("def run(city: dict): pass", "city", "bare `dict`"),
    ("def run(city: set[str]): pass", "city", "`set[str]` is not a supported type"),
    ("def run(city: tuple[int, int]): pass", "city", "not a supported type"),
    ("def run(city: dict[int, str]): pass", "city", "non-string keys"),
    ("import os\ndef run(city: os.PathLike): pass", "city", "not a supported type"),
    ("def run(city: bytes): pass", "city", "`bytes` is not a supported type"),
    ("from typing import Literal\ndef run(city: Literal[1.5]): pass", "city", "literal"),
    ("def run(city: str = None): pass", "city", "does not match its type"),
    ("def run(city: int = 'x'): pass", "city", "does not match its type"),
    ("def run(city: str = str()): pass", "city", "is not a literal"),
    ("def run(city: list[str] = ['a']): pass", "city", "is not allowed"),
    ("def run(city: tuple = (1,)): pass", "city", "not a supported type"),
    ("def run(*city: str): pass", "city", "`*city` is not allowed"),
    ("def run(**city: str): pass", "city", "`**city` is not allowed"),
    ("def run(city: str, /): pass", "city", "positional-only"),
    ("def run(city: 'no such type'): pass", "city", "does not parse"),
    (
        "from typing import TypedDict\nclass A(TypedDict):\n    a: 'A'\ndef run(city: A): pass",
        "city",
        "refers to itself",
    ),
    (
        "from typing import NotRequired\ndef run(city: NotRequired[str]): pass",
        "city",
        "only belongs on a TypedDict",
    ),
]


@pytest.mark.parametrize(("source", "param", "problem"), BAD)
def test_bad_hints_are_manifest_errors_naming_file_line_and_parameter(
    source: str,
    param: str,
    problem: str,
) -> None:
    with pytest.raises(ManifestError) as exc:
        derive_schema(source, "skills/weather/main.py")
    text = str(exc.value)
    assert text.startswith("skills/weather/main.py [line ")
    assert f"parameter `{param}`" in text
    assert problem in text
    assert exc.value.fix


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("async def run(city: str): pass", "`run` is `async def`"),
        ("def other(city: str): pass", "no top-level `def run(...)`"),
        ("class K:\n    def run(self, city: str): pass", "no top-level `def run(...)`"),
        ("def run(city: str:\n    pass", "does not parse"),
    ],
)
def test_structural_problems_are_manifest_errors(source: str, problem: str) -> None:
    with pytest.raises(
        ManifestError, match=problem.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")
    ):
        derive_schema(source, "main.py")


def test_docstrings_give_descriptions_google_style() -> None:
    src = '''
def run(city: str, days: int = 3) -> dict[str, float]:
    """Forecast the weather
    for a city.

    Longer text that is not the description.

    Args:
        city: The city, e.g.
            "Paris".
        days (int): How many days.

    Returns:
        Temperatures by day.
    """
'''
    d = derive_schema(src, "main.py")
    assert d.description == "Forecast the weather for a city."
    assert d.input_schema["properties"]["city"]["description"] == 'The city, e.g. "Paris".'
    assert d.input_schema["properties"]["days"]["description"] == "How many days."
    assert d.output_schema is not None
    assert jsonschema.Draft202012Validator(d.output_schema).is_valid({"mon": 1.5})
    assert not jsonschema.Draft202012Validator(d.output_schema).is_valid({"mon": "x"})


def test_docstrings_give_descriptions_numpy_style() -> None:
    src = '''
def run(city: str, days: int = 3):
    """Forecast.

    Parameters
    ----------
    city : str
        The city.
    days : int, optional
        How many
        days.

    Returns
    -------
    dict
    """
'''
    d = derive_schema(src, "main.py")
    props = d.input_schema["properties"]
    assert props["city"]["description"] == "The city."
    assert props["days"]["description"] == "How many days."
    assert d.output_schema is None


def test_typeddicts_total_notrequired_and_inheritance() -> None:
    src = """
import typing as t
from typing_extensions import NotRequired, Required, TypedDict

class Base(TypedDict):
    id: int

class Point(Base):
    x: float
    label: NotRequired[str]

class Opts(TypedDict, total=False):
    depth: int
    mode: Required[t.Literal["fast", "slow"]]

def run(p: Point, o: "Opts | None" = None, *, tags: list[Point] = []) -> Point:
    pass
"""
    d = derive_schema(src, "main.py")
    v = jsonschema.Draft202012Validator(d.input_schema)
    assert v.is_valid({"p": {"id": 1, "x": 2.0}})
    assert v.is_valid(
        {"p": {"id": 1, "x": 2, "label": "a"}, "o": {"mode": "fast"}, "tags": [{"id": 2, "x": 0}]}
    )
    assert not v.is_valid({"p": {"x": 2.0}})  # base field required
    assert not v.is_valid({"p": {"id": 1, "x": 2.0, "extra": 1}})
    assert not v.is_valid({"p": {"id": 1, "x": 2.0}, "o": {"depth": 1}})  # Required missing
    assert not v.is_valid({"p": {"id": 1, "x": 2.0}, "o": {"mode": "medium"}})
    assert d.output_schema is not None and d.output_schema["required"] == ["id", "x"]


def test_the_source_is_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    src = f'''
import pathlib
pathlib.Path({str(marker)!r}).write_text("module body ran")

class Meta(type):
    def __new__(m, *a):
        pathlib.Path({str(marker)!r}).write_text("class body ran")
        return super().__new__(m, *a)

def default():
    pathlib.Path({str(marker)!r}).write_text("default ran")
    return 1

def run(city: "__import__('os').system('touch {marker}')" = 1):
    """Hi."""
'''
    with pytest.raises(ManifestError):
        derive_schema(src, "evil.py")
    ok_src = src.replace(f"\"__import__('os').system('touch {marker}')\" = 1", "str = 'x'")
    assert derive_schema(ok_src, "evil.py").description == "Hi."
    assert not marker.exists()


def test_deeply_nested_source_is_an_error_not_a_crash() -> None:
    src = "def run(x: " + "list[" * 5000 + "int" + "]" * 5000 + "): pass\n"
    with pytest.raises(ManifestError, match=r"^deep\.py"):
        derive_schema(src, "deep.py")
