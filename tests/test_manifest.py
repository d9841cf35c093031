"""Skill and pack manifests: good ones load, bad ones are refused naming file, field and fix."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.errors import ManifestError
from bastion.manifest import (
    NAME_PATTERN,
    SkillManifest,
    check_semver,
    load_pack_manifest,
    load_skill_manifest,
    normalize_guest_path,
)

GOOD = """
name = "weather"
version = "1.2.3"
description = "Current weather for a city."
runtime = "wasm"
entry = "weather.wasm"
input_schema = { type = "object", properties = { city = { type = "string" } }, required = ["city"] }
deterministic = false

[permissions]
network = ["https://api.weather.test", "https://*.cdn.test:8443"]
secrets = ["WEATHER_KEY"]
[[permissions.filesystem]]
path = "/data"
access = "write"

[limits]
timeout_ms = 2000
memory_mb = 64
output_kb = 16

[[examples]]
input = { city = "Oslo" }
output = { temp = 3 }
"""


def write(tmp_path: Path, text: str, name: str = "skill.toml") -> Path:
    (tmp_path / name).write_text(text)
    return tmp_path


def test_good_manifest_loads_every_field(tmp_path: Path) -> None:
    m = load_skill_manifest(write(tmp_path, GOOD))
    assert m.name == "weather"
    assert [str(r) for r in m.permissions.rules] == [
        "https://api.weather.test",
        "https://*.cdn.test:8443",
    ]
    assert m.permissions.filesystem[0].path == "/data"
    assert m.permissions.filesystem[0].access == "write"
    assert m.limits.timeout_ms == 2000
    assert m.examples[0].input == {"city": "Oslo"}


@pytest.mark.parametrize(
    ("replace", "with_", "field", "words"),
    [
        ('name = "weather"', 'name = "Weather"', "name", "pattern"),
        ('name = "weather"', 'name = "1abc"', "name", "pattern"),
        ('name = "weather"', "name = 3", "name", "string"),
        ('version = "1.2.3"', 'version = "1.2"', "version", "semantic version"),
        ('version = "1.2.3"', 'version = "v1.2.3"', "version", "semantic version"),
        ('version = "1.2.3"', 'version = "01.2.3"', "version", "semantic version"),
        ('runtime = "wasm"', 'runtime = "docker"', "runtime", "'wasm'"),
        ('entry = "weather.wasm"', 'entry = "../x.wasm"', "entry", "relative path"),
        ('entry = "weather.wasm"', 'entry = "/etc/x.wasm"', "entry", "relative path"),
        (
            '"https://api.weather.test",',
            '"https://api.weather.test/path",',
            "permissions.network",
            "api.weather.test/path",
        ),
        ('"https://api.weather.test",', '"ftp://x.test",', "permissions.network", "ftp"),
        ('"https://api.weather.test",', '"https://*",', "permissions.network", "*"),
        (
            'secrets = ["WEATHER_KEY"]',
            'secrets = ["weather-key"]',
            "permissions.secrets",
            "weather-key",
        ),
        ('path = "/data"', 'path = "data"', "permissions.filesystem[0].path", "absolute"),
        ('path = "/data"', 'path = "/data/../etc"', "permissions.filesystem[0].path", ".."),
        ('access = "write"', 'access = "exec"', "permissions.filesystem[0].access", "'read'"),
        ("timeout_ms = 2000", "timeout_ms = -1", "limits.timeout_ms", "greater"),
        ("timeout_ms = 2000", 'timeout_ms = "2s"', "limits.timeout_ms", "integer"),
        ("deterministic = false", "deterministic = false\ncolour = 1", "colour", "Extra"),
        (
            'type = "object", properties',
            'type = "array", properties',
            "input_schema",
            "type 'object'",
        ),
        (
            'city = { type = "string" }',
            'city = { type = "strung" }',
            "input_schema",
            "not a valid JSON Schema",
        ),
    ],
)
def test_bad_manifests_name_the_field_and_value(
    tmp_path: Path, replace: str, with_: str, field: str, words: str
) -> None:
    assert replace in GOOD
    write(tmp_path, GOOD.replace(replace, with_, 1))
    with pytest.raises(ManifestError) as info:
        load_skill_manifest(tmp_path)
    err = info.value
    assert err.source == str(tmp_path / "skill.toml")
    assert err.where is not None and err.where.startswith(field)
    assert words in str(err)
    assert err.code == "MANIFEST_INVALID"


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    write(tmp_path, 'name = "x"\nversion = \n')
    with pytest.raises(ManifestError) as info:
        load_skill_manifest(tmp_path)
    assert info.value.where == "line 2, column 11"
    assert "TOML syntax error" in str(info.value)


def test_missing_required_keys_are_listed(tmp_path: Path) -> None:
    write(tmp_path, 'name = "x"\n')
    with pytest.raises(ManifestError) as info:
        load_skill_manifest(tmp_path)
    msg = str(info.value)
    for key in ("version", "runtime"):
        assert f"{key}: required key is missing" in msg


def test_description_is_required_unless_a_docstring_can_give_it(tmp_path: Path) -> None:
    base = 'name = "x"\nversion = "1.0.0"\nentry = "s.wasm"\ninput_schema = { type = "object" }\n'
    write(tmp_path, base + 'runtime = "wasm"\n')
    with pytest.raises(ManifestError, match="description is required") as info:
        load_skill_manifest(tmp_path)
    assert "docstring" in str(info.value)
    write(tmp_path, base.replace("s.wasm", "s.py") + 'runtime = "python"\n')
    assert load_skill_manifest(tmp_path).description is None


def test_huge_file_is_refused_before_parsing(tmp_path: Path) -> None:
    write(tmp_path, GOOD + "#" * (300 * 1024) + "\n")
    with pytest.raises(ManifestError, match="over the 262144-byte limit"):
        load_skill_manifest(tmp_path)


def test_invalid_utf8_is_refused(tmp_path: Path) -> None:
    (tmp_path / "skill.toml").write_bytes(b'name = "\xff"\n')
    with pytest.raises(ManifestError, match="not valid UTF-8"):
        load_skill_manifest(tmp_path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read the file"):
        load_skill_manifest(tmp_path)


def test_python_skill_may_omit_input_schema_but_others_may_not() -> None:
    base = {"name": "a", "version": "1.0.0", "description": "d", "entry": "a.py"}
    SkillManifest.model_validate({**base, "runtime": "python"})
    with pytest.raises(ValueError, match="input_schema is required"):
        SkillManifest.model_validate({**base, "runtime": "wasm"})


def test_pack_manifest(tmp_path: Path) -> None:
    write(
        tmp_path,
        'name = "my-pack"\nversion = "0.1.0"\nskills = ["a", "b/c"]\n',
        "bastion-pack.toml",
    )
    pm = load_pack_manifest(tmp_path)
    assert pm.skills == ("a", "b/c")
    write(tmp_path, 'name = "my-pack"\nversion = "0.1.0"\nskills = ["../a"]\n', "bastion-pack.toml")
    with pytest.raises(ManifestError, match="relative path inside the pack"):
        load_pack_manifest(tmp_path)


# -- properties ------------------------------------------------------------------------------

_name_re = re.compile(NAME_PATTERN)


@given(st.text(alphabet=string.ascii_letters + string.digits + "_-. ", max_size=70))
def test_name_rule_is_exactly_the_documented_pattern(name: str) -> None:
    data = {
        "name": name,
        "version": "1.0.0",
        "description": "d",
        "runtime": "python",
        "entry": "a.py",
    }
    ok = bool(_name_re.match(name)) and not name.endswith("\n")
    if ok:
        assert SkillManifest.model_validate(data).name == name
    else:
        with pytest.raises(ValueError):
            SkillManifest.model_validate(data)


_num = st.integers(0, 10**6).map(str)


@given(_num, _num, _num, st.sampled_from(["", "-alpha", "-rc.1", "+build.5", "-x.7+b"]))
def test_semver_accepts_valid_versions(a: str, b: str, c: str, tail: str) -> None:
    v = f"{a}.{b}.{c}{tail}"
    assert check_semver(v) == v


@given(st.text(max_size=20))
def test_semver_rejects_anything_without_three_numbers(v: str) -> None:
    parts = v.split("-")[0].split("+")[0].split(".")
    looks_valid = len(parts) == 3 and all(
        p.isdigit() and p.isascii() and (p == "0" or not p.startswith("0")) for p in parts
    )
    if not looks_valid:
        with pytest.raises(ValueError):
            check_semver(v)


@given(st.lists(st.sampled_from(["a", "b", "..", ".", "", "data"]), min_size=1, max_size=6))
@settings(max_examples=200)
def test_guest_paths_never_escape(parts: list[str]) -> None:
    raw = "/" + "/".join(parts)
    try:
        norm = normalize_guest_path(raw)
    except ValueError:
        assert ".." in parts or all(p in ("", ".") for p in parts)
        return
    assert ".." not in norm.split("/")
    assert norm.startswith("/") and norm != "/"
