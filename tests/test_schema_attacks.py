"""Attacks through a pack's JSON Schemas: ``$ref`` as a loader, catastrophic regexes, runaway
validation. The schema is data: references stay inside it, regexes run on RE2 in linear time,
and the work of one validation is bounded."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion import Kernel, load_policy
from bastion.errors import ErrorCode
from bastion.manifest import check_json_schema
from bastion.schemas import SchemaValidator, check_schema_document, compile_pattern
from tests.httpservers import LocalServer

SECRET = "TOP-SECRET-host-file-content-5d1c"


@pytest.fixture(scope="module")
def server() -> Any:
    with LocalServer() as srv:
        srv.reply("/schema.json", json.dumps({"type": "string", "description": SECRET}).encode())
        yield srv


@pytest.fixture(scope="module")
def host_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("host") / "secret.json"
    path.write_text(json.dumps({"type": "string", "enum": [SECRET]}))
    return path


def _targets(port: int, host_file: Path) -> st.SearchStrategy[str]:
    """Reference targets outside the document, in every spelling an attacker might try."""
    hosts = st.sampled_from(
        [f"127.0.0.1:{port}", f"localhost:{port}", f"[::ffff:127.0.0.1]:{port}", f"0x7f.1:{port}"]
    )
    paths = st.sampled_from(["/schema.json", "/", "/a/../schema.json", "/%73chema.json", ""])
    frags = st.sampled_from(["", "#", "#/type", "#/$defs/x", "#anchor", "#%2Ftype"])
    schemes = st.sampled_from(["http", "https", "HTTP", "hTTp"])
    urls = st.builds(lambda s, h, p, f: f"{s}://{h}{p}{f}", schemes, hosts, paths, frags)
    scheme_relative = st.builds(lambda h, p, f: f"//{h}{p}{f}", hosts, paths, frags)
    fpath = str(host_file)
    files = st.sampled_from(
        [
            f"file://{fpath}",
            f"file:{fpath}",
            f"FILE://localhost{fpath}",
            fpath,
            quote(fpath),
            "file://" + "".join(f"%{b:02X}" for b in fpath.encode()),
            f"../../../../../../..{fpath}",
            "secret.json",
            "./secret.json",
            "/etc/passwd",
            "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
            "tag:example.com,2024:x",
            "data:application/json,%7B%7D",
            "https://json-schema.org/draft/2020-12/schema",
            "%23/type",
            " #/type",
        ]
    )
    relative = st.text(
        alphabet=st.characters(codec="utf-8", exclude_characters="#"), min_size=1, max_size=30
    )
    with_frag = st.builds(lambda t, f: t + f, st.one_of(files, relative), frags)
    return st.one_of(urls, scheme_relative, files, relative, with_frag)


def _place(target: str, where: str, keyword: str) -> dict[str, Any]:
    ref = {keyword: target}
    if where == "property":
        return {"type": "object", "properties": {"a": ref}}
    if where == "defs":
        return {"type": "object", "$defs": {"d": ref}, "properties": {"a": {"$ref": "#/$defs/d"}}}
    if where == "allOf":
        return {"type": "object", "allOf": [{"not": ref}]}
    if where == "pointed-at-data":  # a local $ref may aim at any location, which becomes a schema
        return {
            "type": "object",
            "x-data": {"inner": ref},
            "properties": {"a": {"$ref": "#/x-data"}},
        }
    return {"type": "object", **ref}


class TestRefTargets:
    """Every reference leaving the document is refused at discovery, with no fetch or read."""

    @settings(
        max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
    )
    @given(data=st.data())
    def test_outside_refs_refused_without_network_or_file_access(
        self, server: LocalServer, host_file: Path, data: st.DataObject
    ) -> None:
        target = data.draw(_targets(server.port, host_file), label="target")
        where = data.draw(st.sampled_from(["root", "property", "defs", "allOf", "pointed-at-data"]))
        keyword = data.draw(st.sampled_from(["$ref", "$dynamicRef"]))
        schema = _place(target, where, keyword)
        with pytest.raises(ValueError) as info:
            check_json_schema(schema, "input_schema")
        message = str(info.value)
        assert keyword in message and "input_schema" in message
        assert SECRET not in message
        assert server.requests == [], "discovery made a network request for a $ref"
        # Defence in depth: even a validator built on the schema directly retrieves nothing.
        errors = [e.message for e in SchemaValidator(schema).iter_errors({"a": "x"})]
        assert SECRET not in " ".join(errors)
        assert server.requests == []

    @pytest.mark.parametrize(
        "schema",
        [
            {
                "$id": "http://127.0.0.1:1/",
                "type": "object",
                "properties": {"a": {"$ref": "x.json"}},
            },
            {"type": "object", "properties": {"a": {"$id": "http://127.0.0.1:1/s", "$ref": "#/t"}}},
            {"type": "object", "$schema": "http://127.0.0.1:1/meta"},
            {
                "type": "object",
                "properties": {"a": {"$schema": "https://json-schema.org/draft/2020-12/schema"}},
            },
        ],
        ids=["root-id-relative-ref", "embedded-id", "foreign-dialect", "nested-dialect"],
    )
    def test_id_and_dialect_tricks_refused(self, schema: dict[str, Any]) -> None:
        with pytest.raises(ValueError, match=r"\$id|\$ref|\$schema"):
            check_json_schema(schema, "input_schema")

    @pytest.mark.parametrize(
        "schema",
        [
            {
                "type": "object",
                "$defs": {"s": {"type": "string"}},
                "properties": {"a": {"$ref": "#/$defs/s"}},
            },
            {
                "type": "object",
                "$defs": {"s": {"$anchor": "str", "type": "string"}},
                "properties": {"a": {"$ref": "#str"}},
            },
            {
                "type": "object",
                "$defs": {"a b": {"type": "string"}},
                "properties": {"a": {"$ref": "#/$defs/a%20b"}},
            },
            {
                "type": "object",
                "$defs": {"a/b": {"type": "string"}},
                "properties": {"a": {"$ref": "#/$defs/a~1b"}},
            },
            {
                "$id": "https://example.com/root",
                "type": "object",
                "properties": {"a": {"$ref": "#/$defs/s"}},
                "$defs": {"s": {"type": "string"}},
            },
            {
                "type": "object",
                "properties": {"a": {"type": "string"}, "tree": {"$ref": "#/$defs/node"}},
                "$defs": {
                    "node": {
                        "type": "object",
                        "properties": {
                            "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}
                        },
                    }
                },
            },
        ],
        ids=["defs", "anchor", "percent-pointer", "escaped-pointer", "root-id", "recursive-tree"],
    )
    def test_local_refs_still_work(self, schema: dict[str, Any]) -> None:
        check_json_schema(schema, "input_schema")
        v = SchemaValidator(schema)
        assert [e.message for e in v.iter_errors({"a": 1})] != []  # a must be a string
        assert list(v.iter_errors({"a": "ok", "tree": {"kids": [{"kids": []}]}})) == []

    @pytest.mark.parametrize(
        "missing", ["#/$defs/nope", "#nope", "#/properties/a/0", "#//x", "#/type"]
    )
    def test_local_ref_that_does_not_resolve_is_refused(self, missing: str) -> None:
        schema = {"type": "object", "properties": {"a": {"$ref": missing}}}
        with pytest.raises(ValueError, match="does not resolve inside the schema to a schema"):
            check_json_schema(schema, "input_schema")

    @pytest.mark.parametrize(
        "schema",
        [
            {"type": "object", "$ref": "#"},
            {
                "type": "object",
                "$defs": {
                    "a": {"allOf": [{"$ref": "#/$defs/b"}]},
                    "b": {"anyOf": [{"$ref": "#/$defs/a"}]},
                },
                "not": {"$ref": "#/$defs/a"},
            },
            {"type": "object", "if": {"$ref": "#"}},
        ],
        ids=["self", "mutual", "if-self"],
    )
    def test_ref_loop_that_never_consumes_input_is_refused(self, schema: dict[str, Any]) -> None:
        with pytest.raises(ValueError, match="refers to itself"):
            check_json_schema(schema, "input_schema")


def _pack(folder: Path, schema_toml: str) -> Path:
    folder.mkdir()
    (folder / "bastion-pack.toml").write_text(
        'name = "refs"\nversion = "1.0.0"\nskills = ["fetcher", "plain"]\n'
    )
    for name, extra in (("fetcher", schema_toml), ("plain", 'input_schema = { type = "object" }')):
        d = folder / name
        d.mkdir()
        (d / "skill.wasm").write_bytes(b"\0asm\1\0\0\0")
        (d / "skill.toml").write_text(
            f'name = "{name}"\nversion = "1.0.0"\ndescription = "x"\nruntime = "wasm"\n'
            f'entry = "skill.wasm"\n{extra}\n'
        )
    return folder


@pytest.mark.parametrize("kind", ["http", "file"])
def test_kernel_never_fetches_or_reads_a_schema_ref(
    server: LocalServer, host_file: Path, tmp_path: Path, kind: str
) -> None:
    """Through the real kernel: the skill is reported at discovery and never offered; before the
    fix the skill loaded and its first call made the host fetch the URL (or read the file) and
    quote it in the error."""
    target = server.url("/schema.json") if kind == "http" else host_file.as_uri()
    pack = _pack(
        tmp_path / "pack",
        f'input_schema = {{ type = "object", properties = {{ a = {{ "$ref" = "{target}" }} }} }}',
    )
    pol = load_policy(text=f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n')
    with Kernel(pol, pack_paths=[pack], entry_points=False) as k:
        assert k.skill("fetcher") is None
        assert k.skill("plain") is not None
        (problem,) = [p for p in k.problems if "fetcher" in p.message]
        assert "$ref" in problem.message and "points outside the schema" in problem.message
        result = k.invoke("fetcher", {"a": 1})
        assert result.error is not None and result.error.code == ErrorCode.NOT_FOUND
        assert SECRET not in json.dumps(result.to_dict())
    assert server.requests == []


# -- regexes --------------------------------------------------------------------------------

_ATOMS = ["a", "a?", "[ab]", "\\w", ".", "(?:a|a)", "(?:a|ab)", "a*", "\\d*a"]
_INNER = ["+", "*", "{1,9}", "+?"]
_OUTER = ["+", "*", "{2,}", "{1,99}"]


@st.composite
def catastrophic(draw: st.DrawFn) -> str:
    """Nested quantifiers, overlapping alternations and their mixes (exponential in ``re``)."""
    atom = draw(st.sampled_from(_ATOMS))
    inner = draw(st.sampled_from(_INNER))
    outer = draw(st.sampled_from(_OUTER))
    group = f"(?:{atom}{inner}){outer}"
    if draw(st.booleans()):
        group = f"(?:{group}|{atom}){outer}"
    if draw(st.booleans()):
        group = f"({group})"
    return "^" + group + draw(st.sampled_from(["$", "b$", "!", "\\Z", ""]))


@st.composite
def unsupported(draw: st.DrawFn) -> str:
    """Features only a backtracking engine has: backreferences and lookaround."""
    body = draw(st.sampled_from(["a+", "\\w*", "[ab]{2,}", "(a|b)"]))
    form = draw(
        st.sampled_from(
            ["({b})\\1", "(?={b})", "(?!{b})x", "(?<=x){b}", "(?<!x){b}", "(?P<n>{b})(?P=n)"]
        )
    )
    return form.format(b=body)


class TestRegexes:
    @settings(max_examples=150, deadline=None)
    @given(pattern=catastrophic(), n=st.integers(20, 5000))
    def test_catastrophic_patterns_run_on_re2(self, pattern: str, n: int) -> None:
        """Refused at discovery with the pattern quoted, or accepted and matched by RE2
        (linear), agreeing with ``re`` on short inputs where backtracking is still cheap."""
        schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": pattern}}}
        try:
            check_json_schema(schema, "input_schema")
        except ValueError as exc:
            assert repr(pattern) in str(exc) and "RE2" in str(exc)
            return
        assert type(compile_pattern(pattern)).__module__.startswith("re2")
        import re2  # google-re2's own high-level API: an independent reference

        v = SchemaValidator(schema)
        hostile = "a" * n + "!"
        got = not list(v.iter_errors({"s": hostile}))
        assert got == (re2.search(pattern, hostile) is not None)
        for short in ["", "a", "aaab", "ab!", "aaaa"]:
            ok = not list(v.iter_errors({"s": short}))
            assert ok == (re.search(pattern, short) is not None), (pattern, short)

    @settings(max_examples=100, deadline=None)
    @given(pattern=unsupported(), place=st.sampled_from(["pattern", "patternProperties"]))
    def test_backtracking_only_features_refused_with_the_pattern_quoted(
        self, pattern: str, place: str
    ) -> None:
        if place == "pattern":
            schema: dict[str, Any] = {"type": "object", "properties": {"s": {"pattern": pattern}}}
        else:
            schema = {"type": "object", "patternProperties": {pattern: {"type": "string"}}}
        with pytest.raises(ValueError) as info:
            check_json_schema(schema, "input_schema")
        msg = str(info.value)
        assert repr(pattern) in msg and "RE2" in msg and "rewrite it" in msg

    def test_regex_format_is_checked_by_re2(self) -> None:
        v = SchemaValidator({"type": "object", "properties": {"r": {"format": "regex"}}})
        assert list(v.iter_errors({"r": "^(a+)+$"})) == []
        assert list(v.iter_errors({"r": "(a)\\1"})) != []

    def test_every_pattern_keyword_uses_re2(self) -> None:
        """additionalProperties and unevaluatedProperties consult patternProperties too (the
        stock validator runs ``re`` there); a key that only ``re`` would take 2**40 steps on is
        decided at once."""
        key = "a" * 40 + "!"
        for kw in ("additionalProperties", "unevaluatedProperties"):
            schema = {"type": "object", "patternProperties": {"^(a+)+$": {}}, kw: False}
            check_json_schema(schema, "input_schema")
            errors = list(SchemaValidator(schema).iter_errors({key: 1, "aaa": 2}))
            assert (
                len(errors) == 1 and key in errors[0].message and "'aaa'" not in errors[0].message
            )


_LINEAR_CHILD = textwrap.dedent(
    """
    import itertools, sys
    from jsonschema import Draft202012Validator
    from bastion.schemas import SchemaValidator
    atoms = {atoms!r}; inner = {inner!r}; outer = {outer!r}
    make = Draft202012Validator if sys.argv[1] == "stock" else SchemaValidator
    n = int(sys.argv[2])
    for a, i, o in itertools.product(atoms, inner, outer):
        pattern = "^(?:(?:" + a + i + ")" + o + "|" + a + ")" + o + "$"
        v = make({{"type": "string", "pattern": pattern}})
        list(v.iter_errors("a" * n + "!"))
    print("done", flush=True)
    """
)


def _run_limited(mode: str, n: int, cpu_seconds: int) -> subprocess.CompletedProcess[str]:
    code = _LINEAR_CHILD.format(atoms=_ATOMS, inner=_INNER, outer=_OUTER)
    cpu = f"({cpu_seconds}, {cpu_seconds})"
    limit = f"import resource; resource.setrlimit(resource.RLIMIT_CPU, {cpu})\n"
    return subprocess.run(
        [sys.executable, "-c", limit + code, mode, str(n)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_catastrophic_family_completes_under_a_cpu_budget_where_stock_re_does_not() -> None:
    """Every combination of the catastrophic family against a 100 000-character hostile string
    finishes inside a 20 s CPU rlimit with RE2; the stock validator is killed by the same limit
    on a 40-character string (a limit, not a timing assertion: the child either ends or not)."""
    ours = _run_limited("ours", 100_000, 20)
    assert ours.returncode == 0 and "done" in ours.stdout, ours.stderr[-2000:]
    stock = _run_limited("stock", 40, 4)
    assert stock.returncode != 0 and "done" not in stock.stdout


# -- bounded work ---------------------------------------------------------------------------


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


class TestBoundedWork:
    def test_unique_items_is_linear_for_objects(self) -> None:
        """The stock check compares every pair of objects (quadratic); equal values by JSON
        Schema's rules still count as duplicates (1 == 1.0, but true != 1)."""
        v = SchemaValidator({"type": "array", "uniqueItems": True})
        items = [{"i": i, "tag": "x"} for i in range(200_000)]
        assert list(v.iter_errors(items)) == []
        assert list(v.iter_errors([*items, {"tag": "x", "i": 5.0}])) != []
        assert list(v.iter_errors([1, True, 0, False, None, [1], [True]])) == []
        assert list(v.iter_errors([[1, {"a": 2}], [1.0, {"a": 2.0}]])) != []

    def test_exponential_schema_is_stopped_by_the_budget(self) -> None:
        """anyOf of two identical references at every level is 2**depth evaluations of a
        failing value; the budget stops it with an error instead of hanging the host."""
        schema = {
            "$defs": {
                "n": {
                    "anyOf": [
                        {"type": "array", "items": {"$ref": "#/$defs/n"}},
                        {"type": "array", "items": {"$ref": "#/$defs/n"}},
                    ]
                }
            },
            "type": "object",
            "properties": {"v": {"$ref": "#/$defs/n"}},
        }
        check_json_schema(schema, "input_schema")
        deep: Any = 1
        for _ in range(40):
            deep = [deep]
        errors = [e.message for e in SchemaValidator(schema).iter_errors({"v": deep})]
        assert len(errors) == 1 and "validation stopped" in errors[0]

    @pytest.mark.parametrize(
        "schema, why",
        [
            ({"type": "object", "x": _nested(40)}, "nests deeper"),
            ({"type": "object", "enum": list(range(30_000))}, "more than"),
            ({"type": "object", "properties": {"s": {"pattern": "a" * 5000}}}, "characters long"),
        ],
        ids=["depth", "size", "pattern-length"],
    )
    def test_schema_size_depth_and_pattern_length_are_capped(
        self, schema: dict[str, Any], why: str
    ) -> None:
        with pytest.raises(ValueError, match=why):
            check_schema_document(schema, "input_schema")


@pytest.mark.parametrize(
    "schema, value",
    [
        ({"multipleOf": 1e-300}, 10**4000),
        ({"minLength": 10**100}, "abc"),
        ({"maxItems": 10**100, "minItems": 10**90}, [1]),
        ({"minimum": 10**4000}, 1.5),
        ({"multipleOf": 3}, 1e308),
    ],
    ids=[
        "overflowing-multipleOf",
        "huge-minLength",
        "huge-item-counts",
        "huge-minimum",
        "big-float",
    ],
)
def test_huge_numbers_in_schema_or_value_cost_nothing_and_never_raise(
    schema: dict[str, Any], value: Any
) -> None:
    """Numeric limits are compared, never iterated; an arithmetic error in a keyword (the stock
    ``multipleOf`` overflows converting a 4000-digit int) is a validation error, not a crash."""
    errors = [e.message for e in SchemaValidator(schema).iter_errors(value)]
    assert len(errors) == 1
