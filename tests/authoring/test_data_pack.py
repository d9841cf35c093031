"""The data pack's skills through the real kernel and sandbox: examples, edges, hostile input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.authoring.conftest import PACKS, PackRunner

pytestmark = pytest.mark.slow


@pytest.fixture
def data(pack_runner: Callable[..., PackRunner]) -> PackRunner:
    return pack_runner("data")


def test_every_data_skill_is_granted_under_the_default_policy(data: PackRunner) -> None:
    names = {t.name for t in data.kernel.tools()}
    assert names == {
        "calc",
        "convert_units",
        "json_query",
        "text_stats",
        "regex_extract",
        "sparkline",
        "slugify",
    }


def test_calc_input_schema_is_derived_from_run(data: PackRunner) -> None:
    st = data.kernel.skill("calc")
    assert st is not None
    schema = st.skill.input_schema
    assert schema["required"] == ["expression"]
    assert schema["properties"]["precision"]["type"] == "integer"
    assert "Significant digits" in schema["properties"]["precision"].get("description", "")


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("2 * (3 + 4) ** 2", 98),
        ("7 // 2", 3),
        ("-7 % 3", 2),
        ("2 ** -1", 0.5),
        ("max(1, 5, 3) - min(4, 2)", 3),
        ("round(2.567, 2)", 2.57),
        ("log(8, 2)", 3.0),
        ("factorial(20)", 2432902008176640000),
        ("2 ** 100", 2**100),
        ("tau / pi", 2.0),
    ],
)
def test_calc_values(data: PackRunner, expression: str, value: float) -> None:
    assert data.ok("calc", expression=expression)["result"] == value


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("9**9**9", "too large"),
        ("2 ** 100000", "too large"),
        ("factorial(100000)", "too large"),
        ("__import__('os')", "'__import__' is not available"),
        ("__import__('os').system('id')", "calling Attribute is not allowed"),
        ("(1).__class__.__bases__", "Attribute is not allowed"),
        ("open('/etc/passwd')", "'open' is not available"),
        ("[x for x in range(10**9)]", "ListComp is not allowed"),
        ("lambda: 0", "Lambda is not allowed"),
        ("'a' * 10", "only numbers are allowed"),
        ("2 ^ 3", "write powers as '**'"),
        ("1 / 0", "division by zero"),
        ("sqrt(-1)", "math error in 'sqrt(-1)'"),
        ("1e308 * 10", "not a finite number"),
        ("(" * 300 + "1" + ")" * 300, "nested more than 40 deep"),
        ("(" * 41 + "1" + ")" * 41, "nested more than 40 deep"),
        ("-" * 1500 + "1", "more than 40 signs in a row"),
        ("- + " * 30 + "1", "more than 40 signs in a row"),
        ("2 ** " * 60 + "1", "more than 40 powers"),
        ("1 + " * 400 + "1", "too long (more than 400 parts)"),
        ("((((((1))))))" * 100, "calling Call is not allowed"),
        ("1 + " * 1000 + "1", "characters; the limit is 2000"),
        ("x + 1", "unknown name 'x'"),
        ("", "empty"),
    ],
)
def test_calc_refuses_with_a_clear_message(data: PackRunner, expression: str, says: str) -> None:
    code, message = data.error("calc", expression=expression)
    assert code == "SKILL_ERROR"
    assert says in message


def test_calc_rejects_wrong_input_types_before_running(data: PackRunner) -> None:
    code, message = data.error("calc", expression=5)
    assert code == "INVALID_INPUT"
    assert "input.expression" in message
    code, _ = data.error("calc", expression="1", extra=True)
    assert code == "INVALID_INPUT"


def test_convert_units(data: PackRunner) -> None:
    out = data.ok("convert_units", value=5, from_unit="km", to_unit="mi", precision=5)
    assert out["result"] == 3.1069
    assert out["category"] == "length"
    assert data.ok("convert_units", value=-40, from_unit="C", to_unit="F")["result"] == -40.0
    assert data.ok("convert_units", value=8, from_unit="Mbit", to_unit="MB")["result"] == 1.0
    code, message = data.error("convert_units", value=1, from_unit="kg", to_unit="m")
    assert (code, "'kg' (mass) to 'm' (length)" in message) == ("SKILL_ERROR", True)
    code, message = data.error("convert_units", value=1, from_unit="mb", to_unit="B")
    assert "ambiguous" in message and "'Mbit'" in message and "'MB'" in message
    code, message = data.error("convert_units", value=-300, from_unit="C", to_unit="K")
    assert "below absolute zero" in message
    code, message = data.error("convert_units", value=1, from_unit="furlong", to_unit="m")
    assert "unknown from_unit 'furlong'" in message and "length: nm" in message


def test_json_query(data: PackRunner) -> None:
    doc = '{"items": [{"id": 1, "tags": ["a"]}, {"id": 2, "tags": []}], "n": null}'
    assert data.ok("json_query", document=doc, query="items[*].id")["result"] == [1, 2]
    assert data.ok("json_query", document=doc, query="items[-1].id")["result"] == 2
    assert data.ok("json_query", document=doc, query="n") == {
        "found": True,
        "count": 1,
        "result": None,
    }
    assert data.ok("json_query", document=doc, query="items[5].id") == {
        "found": False,
        "count": 0,
        "result": None,
    }
    assert data.ok("json_query", document=doc, query="items[*].tags[0]")["result"] == ["a"]


@pytest.mark.parametrize(
    ("document", "query", "says"),
    [
        ("[" * 100_000 + "]" * 100_000, "x", "nested more than 200 levels"),
        ('{"a": NaN}', "a", "NaN is not a JSON value"),
        ("{bad", "a", "line 1 column 2"),
        ("{}", "a[", "bad bracket at position 1"),
        ("{}", "a..b", "expected a key name after '.' at position 2"),
        ("1" * 5000, "$", "not valid JSON"),
    ],
)
def test_json_query_refuses(data: PackRunner, document: str, query: str, says: str) -> None:
    code, message = data.error("json_query", document=document, query=query)
    assert code == "SKILL_ERROR"
    assert says in message


def test_text_stats(data: PackRunner) -> None:
    out = data.ok("text_stats", text="Dogs bark. Dogs run!\n\nCats nap?", top_n=1)
    assert (out["words"], out["sentences"], out["paragraphs"], out["lines"]) == (6, 3, 2, 3)
    assert out["top_words"] == [{"word": "dogs", "count": 2}]
    _, message = data.error("text_stats", text="x", top_n=1000)
    assert "top_n must be between 0 and 100, got 1000" in message


def test_regex_extract_named_groups_and_bounds(data: PackRunner) -> None:
    out = data.ok(
        "regex_extract", pattern=r"(?P<k>\w+)=(?P<v>\d+)?", text="a=1 b= c=3", max_matches=2
    )
    assert out["truncated"] is True
    assert [m["named"] for m in out["matches"]] == [{"k": "a", "v": "1"}, {"k": "b", "v": None}]
    code, message = data.error("regex_extract", pattern="(", text="x")
    assert "invalid pattern '('" in message
    code, _ = data.error("regex_extract", pattern="a", text="a", flags=["NOPE"])
    assert code == "INVALID_INPUT"


def test_catastrophic_regex_is_stopped_by_the_time_limit(
    pack_runner: Callable[..., PackRunner],
) -> None:
    runner = pack_runner("data", "[skills.regex_extract.limits]\ntimeout_ms = 1000\n")
    code, _ = runner.error("regex_extract", pattern=r"^(a+)+$", text="a" * 40 + "b")
    assert code == "TIMEOUT"


def test_slugify_uses_its_vendored_dependency(data: PackRunner) -> None:
    out = data.ok("slugify", text="Ærøskøbing Straße: 10 Things", separator="_")
    assert out == {"slug": "aeroskobing_strasse_10_things", "length": 29}


def test_the_vendored_dependency_is_built_from_its_source_in_the_repository(
    tmp_path: Path,
) -> None:
    """The committed _vendor/ is what vendoring the wheel of vendor-src/textslug gives: the
    module and its license, byte for byte (pip builds the wheel offline, no index)."""
    import json
    import shutil
    import subprocess
    import sys

    from bastion.vendor import vendor_skill

    src = PACKS["data"].parent / "vendor-src" / "textslug"
    work = tmp_path / "textslug"
    shutil.copytree(src, work)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(wheels),
            str(work),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    skill = tmp_path / "slugify"
    shutil.copytree(PACKS["data"] / "slugify", skill, ignore=shutil.ignore_patterns("_vendor"))
    vendor_skill(skill, ["--no-index", "--find-links", str(wheels)])
    fresh = json.loads((skill / "vendor.lock.json").read_text())["files"]
    committed = json.loads((PACKS["data"] / "slugify" / "vendor.lock.json").read_text())["files"]
    for rel in ("textslug/__init__.py", "textslug-1.0.0.dist-info/licenses/LICENSE"):
        assert fresh[rel] == committed[rel], rel
