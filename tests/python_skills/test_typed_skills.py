"""Schemas derived inside the sandbox from real type hints, arguments converted to those types,
results converted back: every supported type round-tripped with hypothesis-generated values."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.kernel import Kernel
from bastion.policy import load_policy
from bastion.skill import Skill

pytestmark = pytest.mark.slow

COMMON = '''
"""Echo every argument with the Python type it was converted to."""
from __future__ import annotations

import dataclasses
import enum
from typing import Annotated, Literal, NamedTuple, NotRequired, Optional, Required, TypedDict, Union

from bastion_sdk import Field


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Opts(TypedDict, total=False):
    loud: Required[bool]
    tag: str


class Box(TypedDict):
    size: int
    label: NotRequired[str]


@dataclasses.dataclass
class Point:
    x: int
    y: float = 0.0


class Pair(NamedTuple):
    left: str
    right: int = 0


@dataclasses.dataclass
class Tree:
    value: int
    children: list[Tree] = dataclasses.field(default_factory=list)


Names = list[str]
type Matrix = list[list[int]]


def _kind(v):
    return type(v).__name__


'''

PARAMS = """\
    i: int,
    f: float,
    s: str,
    b: bool,
    n: None,
    li: list[int],
    tu: tuple[str, int],
    tv: tuple[int, ...],
    se: set[str],
    fs: frozenset[int],
    di: dict[str, bool],
    op: Optional[int],
    un: Union[int, str],
    pipe: str | None,
    lit: Literal["a", "b", 3],
    alias: Names,
    matrix: Matrix,
    color: Color,
    level: Level,
    opts: Opts,
    box: Box,
    point: Point,
    pair: Pair,
    tree: Tree,
    score: Annotated[int, Field("a score", ge=0, le=10)],
    word: Annotated[str, Field(min_length=1, max_length=5, pattern="^[a-z]+$")],
    between: Annotated[float, Field(gt=0, lt=1)],
    step: Annotated[int, Field(multiple_of=5)],
    note: Annotated[str, "a free-form note"],
"""

TYPES_SKILL = (
    COMMON
    + """
def run(
"""
    + PARAMS
    + ''') -> dict[str, object]:
    """Echo everything."""
    args = dict(locals())
    kinds = {k: _kind(v) for k, v in args.items()}
    kinds["tree.children"] = [_kind(c) for c in tree.children]
    return {"kinds": kinds, "values": args}
'''
)

# The same parameters returned as a dataclass: the derived output schema is precise for every
# type, so conversion out is checked against it.
TYPES_BACK = (
    COMMON
    + """
@dataclasses.dataclass
class Echo:
    i: int
    f: float
    s: str
    b: bool
    n: None
    li: list[int]
    tu: tuple[str, int]
    tv: tuple[int, ...]
    se: set[str]
    fs: frozenset[int]
    di: dict[str, bool]
    op: Optional[int]
    un: Union[int, str]
    pipe: str | None
    lit: Literal["a", "b", 3]
    alias: Names
    matrix: Matrix
    color: Color
    level: Level
    opts: Opts
    box: Box
    point: Point
    pair: Pair
    tree: Tree
    score: Annotated[int, Field("a score", ge=0, le=10)]
    word: Annotated[str, Field(min_length=1, max_length=5, pattern="^[a-z]+$")]
    between: Annotated[float, Field(gt=0, lt=1)]
    step: Annotated[int, Field(multiple_of=5)]
    note: Annotated[str, "a free-form note"]


def run(
"""
    + PARAMS
    + ''') -> Echo:
    """Return every argument, converted back."""
    return Echo(**locals())
'''
)

EXPECTED_KINDS = {
    "i": "int",
    "f": "float",
    "s": "str",
    "b": "bool",
    "n": "NoneType",
    "li": "list",
    "tu": "tuple",
    "tv": "tuple",
    "se": "set",
    "fs": "frozenset",
    "di": "dict",
    "alias": "list",
    "matrix": "list",
    "color": "Color",
    "level": "Level",
    "opts": "dict",
    "box": "dict",
    "point": "Point",
    "pair": "Pair",
    "tree": "Tree",
    "score": "int",
    "word": "str",
    "between": "float",
    "step": "int",
    "note": "str",
}


def _write_pack(root: Path, skills: dict[str, dict[str, str]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    names = ", ".join(f'"{n}"' for n in skills)
    (root / "bastion-pack.toml").write_text(
        f'name = "typed"\nversion = "1.0.0"\nskills = [{names}]\n'
    )
    for name, files in skills.items():
        folder = root / name
        for rel, text in files.items():
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        if "skill.toml" not in files:
            (folder / "skill.toml").write_text(
                f'name = "{name}"\nversion = "1.0.0"\nruntime = "python"\nentry = "skill.py"\n'
            )
    return root


@pytest.fixture(scope="module")
def typed_kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    from bastion.sandbox.runner_build import load_runner

    load_runner()
    root = tmp_path_factory.mktemp("typed")
    pack = _write_pack(
        root / "pack",
        {"types": {"skill.py": TYPES_SKILL}, "types_back": {"skill.py": TYPES_BACK}},
    )
    kernel = Kernel(
        load_policy(text=f'[audit]\npath = "{root / "audit.jsonl"}"\n'),
        pack_paths=[pack],
        entry_points=False,
        environ={},
    )
    assert not kernel.problems, kernel.problems
    yield kernel
    kernel.close()


def _skill(kernel: Kernel, name: str) -> Skill:
    status = kernel.skill(name)
    assert status is not None, name
    return status.skill


def _schema(kernel: Kernel, name: str) -> dict[str, Any]:
    return _skill(kernel, name).input_schema


def test_every_type_has_its_schema(typed_kernel: Kernel) -> None:
    props = _schema(typed_kernel, "types")["properties"]
    assert props["i"] == {"type": "integer"}
    assert props["n"] == {"type": "null"}
    assert props["tu"]["prefixItems"] == [{"type": "string"}, {"type": "integer"}]
    assert props["tu"]["items"] is False
    assert props["se"] == {"type": "array", "items": {"type": "string"}, "uniqueItems": True}
    assert props["di"] == {"type": "object", "additionalProperties": {"type": "boolean"}}
    assert props["op"] == {"type": ["integer", "null"]}
    assert props["lit"] == {"enum": ["a", "b", 3]}
    assert props["alias"] == {"type": "array", "items": {"type": "string"}}
    assert props["matrix"]["items"] == {"type": "array", "items": {"type": "integer"}}
    assert props["color"] == {"enum": ["red", "green"], "type": "string"}
    assert props["level"] == {"enum": [1, 2], "type": "integer"}
    assert props["opts"]["required"] == ["loud"]
    assert props["box"]["required"] == ["size"]
    assert props["point"]["required"] == ["x"] and props["point"]["properties"]["y"] == {
        "type": "number",
        "default": 0.0,
    }
    assert props["pair"]["properties"]["right"]["default"] == 0
    assert props["tree"] == {"$ref": "#/$defs/Tree"}
    assert "Tree" in _schema(typed_kernel, "types")["$defs"]
    assert props["score"] == {
        "type": "integer",
        "minimum": 0,
        "maximum": 10,
        "description": "a score",
    }
    assert props["word"] == {
        "type": "string",
        "minLength": 1,
        "maxLength": 5,
        "pattern": "^[a-z]+$",
    }
    assert props["between"] == {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}
    assert props["step"] == {"type": "integer", "multipleOf": 5}
    assert props["note"] == {"type": "string", "description": "a free-form note"}
    out = _skill(typed_kernel, "types").output_schema
    assert out is not None and out["type"] == "object"
    # The dataclass return type gives the output schema the same shape, field by field.
    back = _skill(typed_kernel, "types_back").output_schema
    assert back is not None and _schema(typed_kernel, "types_back") == _schema(
        typed_kernel, "types"
    )
    back_props = back["properties"]
    assert set(back_props) == set(props)
    for key in ("i", "se", "di", "op", "lit", "color", "level", "score", "word", "between", "step"):
        assert back_props[key] == props[key], key


# Values for every parameter, drawn by hypothesis (hypothesis-jsonschema cannot generate from
# these schemas: recursive $refs, prefixItems); each drawn input is checked against the derived
# schema before it is sent, so the generator and the schema must agree.
# Printable text only: the kernel's sanitizer (a separate layer) removes controls, bidi and
# zero-width characters from every result, which this round trip is not about.
_chars = st.characters(categories=("L", "N", "P", "S", "Zs"))
_text = st.text(_chars, max_size=8)
_ints = st.integers(-(2**53), 2**53)
_floats = st.floats(allow_nan=False, allow_infinity=False, width=64) | _ints
_tree: st.SearchStrategy[dict[str, Any]] = st.recursive(
    st.fixed_dictionaries({"value": _ints}),
    lambda kids: st.fixed_dictionaries(
        {"value": _ints}, optional={"children": st.lists(kids, max_size=3)}
    ),
    max_leaves=6,
)
ARGS = st.fixed_dictionaries(
    {
        "i": _ints,
        "f": _floats,
        "s": st.text(_chars),
        "b": st.booleans(),
        "n": st.none(),
        "li": st.lists(_ints, max_size=5),
        "tu": st.tuples(_text, _ints).map(list),
        "tv": st.lists(_ints, max_size=5),
        "se": st.lists(_text, max_size=5, unique=True),
        "fs": st.lists(_ints, max_size=5, unique=True),
        "di": st.dictionaries(_text, st.booleans(), max_size=4),
        "op": st.none() | _ints,
        "un": _ints | _text,
        "pipe": st.none() | _text,
        "lit": st.sampled_from(["a", "b", 3]),
        "alias": st.lists(_text, max_size=4),
        "matrix": st.lists(st.lists(_ints, max_size=3), max_size=3),
        "color": st.sampled_from(["red", "green"]),
        "level": st.sampled_from([1, 2]),
        "opts": st.fixed_dictionaries({"loud": st.booleans()}, optional={"tag": _text}),
        "box": st.fixed_dictionaries({"size": _ints}, optional={"label": _text}),
        "point": st.fixed_dictionaries({"x": _ints}, optional={"y": _floats}),
        "pair": st.fixed_dictionaries({"left": _text}, optional={"right": _ints}),
        "tree": _tree,
        "score": st.integers(0, 10),
        "word": st.from_regex(r"\A[a-z]{1,5}\Z"),
        "between": st.floats(0, 1, exclude_min=True, exclude_max=True),
        "step": st.integers(-20, 20).map(lambda k: 5 * k),
        "note": _text,
    }
)


def _children(tree: dict[str, Any]) -> int:
    return len(tree.get("children", []))


def test_values_round_trip_through_the_types(typed_kernel: Kernel) -> None:
    schema = _schema(typed_kernel, "types")
    output_schema = _skill(typed_kernel, "types").output_schema
    assert output_schema is not None

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(args=ARGS)
    def check(args: dict[str, Any]) -> None:
        jsonschema.validate(args, schema)
        result = typed_kernel.invoke("types", args)
        assert result.ok, (args, result.error)
        out = result.output
        jsonschema.validate(out, output_schema)
        for key, kind in EXPECTED_KINDS.items():
            assert out["kinds"][key] == kind, (key, out["kinds"][key])
        assert out["kinds"]["tree.children"] == ["Tree"] * _children(args["tree"])
        assert out["kinds"]["op"] in ("int", "NoneType")
        assert out["kinds"]["un"] == type(args["un"]).__name__
        values = out["values"]
        for key, value in args.items():
            got = values[key]
            if key in ("se", "fs"):
                assert sorted(got) == sorted(set(value)), key
            elif key == "f":
                assert got == float(value)
            elif key in ("point", "pair"):
                assert {k: got[k] for k in value} == _fill_floats(key, value), key
            elif key == "tree":
                assert _same_tree(got, value)
            else:
                assert got == value, key

    check()


def _same_tree(got: dict[str, Any], sent: dict[str, Any]) -> bool:
    kids = sent.get("children", [])
    return (
        got["value"] == sent["value"]
        and len(got["children"]) == len(kids)
        and all(_same_tree(g, k) for g, k in zip(got["children"], kids, strict=True))
    )


def test_values_convert_back_against_the_derived_output_schema(typed_kernel: Kernel) -> None:
    """Every type in, the same value back through a dataclass return type: the output must
    match the output schema derived from that type (conversion out, checked per type)."""
    schema = _schema(typed_kernel, "types_back")
    output_schema = _skill(typed_kernel, "types_back").output_schema
    assert output_schema is not None

    @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
    @given(args=ARGS)
    def check(args: dict[str, Any]) -> None:
        jsonschema.validate(args, schema)
        result = typed_kernel.invoke("types_back", args)
        assert result.ok, (args, result.error)
        out = result.output
        jsonschema.validate(out, output_schema)
        assert out["color"] == args["color"] and out["level"] == args["level"]
        assert out["se"] == sorted(set(args["se"])) and out["fs"] == sorted(set(args["fs"]))
        assert out["tu"] == args["tu"] and out["tree"]["value"] == args["tree"]["value"]
        assert out["between"] == args["between"] and out["step"] == args["step"]

    check()


def _fill_floats(key: str, value: dict[str, Any]) -> dict[str, Any]:
    if key == "point" and "y" in value:
        return {**value, "y": float(value["y"])}
    return value


@pytest.mark.parametrize(
    ("field", "bad", "says"),
    [
        ("color", "purple", "'purple' is not one of"),
        ("point", {"x": 1, "z": 2}, "Point has no field 'z'"),
        ("tu", ["a"], "expected 2 items"),
        ("level", 3, "is not one of"),
    ],
)
def test_a_value_the_types_refuse_is_invalid_input(
    typed_kernel: Kernel, tmp_path: Path, field: str, bad: Any, says: str
) -> None:
    """Conversion is checked in the guest too (here against the runner directly, because the
    kernel's schema check would stop these values first)."""
    from bastion.errors import ExecutionError
    from tests.python_skills.conftest import folder_request

    skill = _skill(typed_kernel, "types")
    assert skill.folder is not None
    good = _a_valid_input(_schema(typed_kernel, "types"))
    req = folder_request(skill.folder, {**good, field: bad})
    from bastion.sandbox.python_exec import PythonExecutor

    ex = PythonExecutor()
    try:
        with pytest.raises(ExecutionError) as info:
            ex.execute(req)
    finally:
        ex.close()
    assert info.value.error_code.value == "INVALID_INPUT"
    assert says in info.value.message


def _a_valid_input(schema: dict[str, Any]) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    @settings(max_examples=1, database=None, suppress_health_check=list(HealthCheck))
    @given(args=ARGS)
    def one(args: dict[str, Any]) -> None:
        found.append(args)

    one()
    jsonschema.validate(found[0], schema)
    return found[0]


DOC_STYLES = {
    "google": '''
def run(city: str, days: int = 1) -> str:
    """Forecast the weather.

    Args:
        city: the city's name
        days (int): how many days
            ahead, at most a week

    Returns:
        the forecast text
    """
    return city
''',
    "numpy": '''
def run(city: str, days: int = 1) -> str:
    """Forecast the weather.

    Parameters
    ----------
    city : str
        the city's name
    days : int
        how many days
        ahead, at most a week

    Returns
    -------
    str
        the forecast text
    """
    return city
''',
    "rest": '''
def run(city: str, days: int = 1) -> str:
    """Forecast the weather.

    :param city: the city's name
    :param int days: how many days
        ahead, at most a week
    :returns: the forecast text
    """
    return city
''',
}


@pytest.fixture(scope="module")
def doc_kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    root = tmp_path_factory.mktemp("docs")
    pack = _write_pack(
        root / "pack", {f"doc_{k}": {"skill.py": textwrap.dedent(v)} for k, v in DOC_STYLES.items()}
    )
    kernel = Kernel(
        load_policy(text=f'[audit]\npath = "{root / "audit.jsonl"}"\n'),
        pack_paths=[pack],
        entry_points=False,
        environ={},
    )
    assert not kernel.problems, kernel.problems
    yield kernel
    kernel.close()


@pytest.mark.parametrize("style", sorted(DOC_STYLES))
def test_docstring_parameter_descriptions_in_every_style(doc_kernel: Kernel, style: str) -> None:
    skill = _skill(doc_kernel, f"doc_{style}")
    assert skill.description == "Forecast the weather."
    props = skill.input_schema["properties"]
    assert props["city"]["description"] == "the city's name"
    assert props["days"]["description"] == "how many days ahead, at most a week"
    assert props["days"]["default"] == 1
    assert skill.input_schema["required"] == ["city"]
    assert skill.output_schema is not None
    assert skill.output_schema["type"] == "string"
    assert skill.output_schema["description"] == "the forecast text"


BAD_SKILLS = {
    "loops": ("while True:\n    pass\n\ndef run() -> int:\n    return 1\n", "did not finish"),
    "hungry": (
        "hoard = []\nwhile True:\n    hoard.append(bytearray(64 << 20))\n\n"
        "def run() -> int:\n    return 1\n",
        "needed more than",
    ),
    "anyarg": (
        "from typing import Any\ndef run(x: Any) -> int:\n    return 1\n",
        "parameter 'x' of run(): Any says nothing",
    ),
    "untyped": ("def run(x):\n    return 1\n", "parameter 'x' of run() has no type hint"),
    "stars": ("def run(**kw: int):\n    return 1\n", "run() takes **kw"),
    "raises": ("raise RuntimeError('no config here')\ndef run():\n    return 1\n", "no config"),
}


def test_a_module_that_loops_or_hoards_or_has_bad_hints_is_refused_with_the_reason(
    tmp_path: Path,
) -> None:
    pack = _write_pack(
        tmp_path / "pack",
        {
            # A comment unique to this run: the memo (which remembers failures) misses, so the
            # deadline and memory cap are really exercised.
            **{
                name: {"skill.py": f'"""Bad."""\n# {tmp_path.name} {os.getpid()}\n{src}'}
                for name, (src, _) in BAD_SKILLS.items()
            },
            "fine": {"skill.py": 'def run() -> int:\n    """Fine."""\n    return 1\n'},
        },
    )
    kernel = Kernel(
        load_policy(text=f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n'),
        pack_paths=[pack],
        entry_points=False,
        environ={},
    )
    try:
        assert {st.name for st in kernel.skills()} == {"fine"}  # the others are never offered
        messages = [p.message for p in kernel.problems]
        for name, (_, reason) in BAD_SKILLS.items():
            mine = [m for m in messages if f"{name}/skill.py" in m or f"/{name}/" in m]
            assert mine and reason in mine[0], (name, messages)
        assert kernel.invoke("fine", {}).output == 1
    finally:
        kernel.close()


def test_a_toml_schema_overrides_the_derived_one(tmp_path: Path) -> None:
    toml = (
        'name = "over"\nversion = "1.0.0"\nruntime = "python"\nentry = "skill.py"\n'
        'description = "Doubles."\n'
        '[input_schema]\ntype = "object"\nrequired = ["n"]\nadditionalProperties = false\n'
        '[input_schema.properties.n]\ntype = "integer"\nmaximum = 5\n'
    )
    src = "def run(n: int) -> int:\n    return 2 * n\n"
    pack = _write_pack(tmp_path / "pack", {"over": {"skill.toml": toml, "skill.py": src}})
    kernel = Kernel(
        load_policy(text=f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n'),
        pack_paths=[pack],
        entry_points=False,
        environ={},
    )
    try:
        skill = _skill(kernel, "over")
        assert skill.input_schema["properties"]["n"]["maximum"] == 5
        assert skill.output_schema is not None and skill.output_schema["type"] == "integer"
        assert kernel.invoke("over", {"n": 6}).error.code == "INVALID_INPUT"  # type: ignore[union-attr]
        assert kernel.invoke("over", {"n": 2}).output == 4
    finally:
        kernel.close()
