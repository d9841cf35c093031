"""The derivation memo: content-keyed, never stale, never trusted for errors, bounded on disk."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.cachedir import CACHE_ENV
from bastion.discovery import discover
from bastion.manifest import check_json_schema, load_skill_manifest
from bastion.memo import MEMO_ENV, Memo, default_memo
from bastion.plugins import make_plugin_manager
from bastion.policy import load_policy
from bastion.pyschema import derive_schema_memoized, skill_digest

SKILL_TOML = (
    'name = "greet"\nversion = "1.0.0"\ndescription = "Greet."\nruntime = "python"\n'
    'entry = "skill.py"\n'
)
SOURCE = 'def run(name: str, times: int = 1) -> str:\n    """Greet someone."""\n    return name\n'


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache directory for this test (the memo lives in its ``derived`` folder)."""
    root = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(root))
    monkeypatch.delenv(MEMO_ENV, raising=False)
    return root


def _pack(folder: Path, source: str) -> Path:
    (folder / "greet").mkdir(parents=True, exist_ok=True)
    (folder / "bastion-pack.toml").write_text('name = "p"\nversion = "1.0.0"\nskills = ["greet"]\n')
    (folder / "greet" / "skill.toml").write_text(SKILL_TOML)
    (folder / "greet" / "skill.py").write_text(source)
    return folder


def _discover(folder: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    monkeypatch.setenv("BASTION_LOAD_PLUGINS", "")
    found = discover(load_policy(text=""), make_plugin_manager(), pack_paths=[folder])
    assert not found.problems, found.problems
    return found.skills["greet"].input_schema


@given(
    parts=st.lists(st.one_of(st.text(), st.binary()), min_size=1, max_size=4),
    other=st.lists(st.one_of(st.text(), st.binary()), min_size=1, max_size=4),
)
def test_keys_differ_whenever_the_parts_differ(
    parts: list[str | bytes], other: list[str | bytes]
) -> None:
    memo = Memo(Path("/nonexistent"))
    same = [p if isinstance(p, bytes) else p.encode("utf-8", "surrogatepass") for p in parts] == [
        p if isinstance(p, bytes) else p.encode("utf-8", "surrogatepass") for p in other
    ]
    assert (memo.path("ns", *parts) == memo.path("ns", *other)) == same
    assert memo.path("ns", *parts) != memo.path("other", *parts)


def test_roundtrip_and_misses(tmp_path: Path) -> None:
    memo = Memo(tmp_path)
    assert memo.get("ns", "a") is None
    memo.put("ns", {"x": [1, 2, "é"]}, "a")
    assert memo.get("ns", "a") == {"x": [1, 2, "é"]}
    assert memo.get("ns", "b") is None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.parametrize("damage", [b"", b"{not json", b"\xff\xfe", b"[" * 100_000])
def test_a_damaged_entry_is_a_miss(tmp_path: Path, damage: bytes) -> None:
    memo = Memo(tmp_path)
    memo.put("ns", {"ok": True}, "k")
    memo.path("ns", "k").write_bytes(damage)
    assert memo.get("ns", "k") is None


def test_values_that_are_not_json_are_not_stored(tmp_path: Path) -> None:
    memo = Memo(tmp_path)
    memo.put("ns", {"x": float("nan")}, "k")
    memo.put("ns", {"x": object()}, "k2")
    assert list(tmp_path.iterdir()) == []


def test_an_unusable_memo_only_costs_time(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    Memo(not_a_dir).put("ns", 1, "k")  # cannot write there: ignored
    assert Memo(not_a_dir).get("ns", "k") is None


def test_the_folder_is_kept_bounded(tmp_path: Path) -> None:
    old = Memo(tmp_path, max_entries=8)
    for i in range(12):
        old.put("ns", i, str(i))
        os.utime(old.path("ns", str(i)), ns=(i * 10**9, i * 10**9))
    # A later process prunes once, keeping the newest three quarters of the cap.
    Memo(tmp_path, max_entries=8).put("ns", 99, "new")
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert len(kept) == 6
    assert Memo(tmp_path).get("ns", "new") == 99
    assert Memo(tmp_path).get("ns", "0") is None


def test_memo_lives_in_the_private_cache_dir_and_can_be_turned_off(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memo = default_memo()
    assert memo is not None and memo.root == cache_dir / "derived"
    assert stat.S_IMODE(memo.root.stat().st_mode) == 0o700
    monkeypatch.setenv(MEMO_ENV, "1")
    assert default_memo() is None


def _entry(pack: Path) -> Path:
    memo = default_memo()
    assert memo is not None
    from bastion.sandbox.runner_build import runner_digest

    folder = pack / "greet"
    return memo.path("pyschema-guest", runner_digest(), skill_digest(folder, "skill.py"))


def _unique(tmp_path: Path) -> str:
    """The source with a comment only this test uses, so its first derivation is a miss
    (the memo is the shared test cache's: the runner it needs is built there)."""
    return f"# {tmp_path.name} {os.getpid()}\n" + SOURCE


@pytest.mark.slow
def test_a_derivation_is_remembered_and_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pack = _pack(tmp_path / "pack", _unique(tmp_path))
    entry = _entry(pack)
    assert not entry.exists()
    cold = _discover(pack, monkeypatch)
    assert entry.is_file()
    stored = json.loads(entry.read_text())
    assert stored["input_schema"] == cold
    # The next discovery reads the entry: a (valid) change made to it shows.
    stored["input_schema"]["properties"]["name"]["description"] = "from the memo"
    entry.write_text(json.dumps(stored))
    warm = _discover(pack, monkeypatch)
    assert warm["properties"]["name"]["description"] == "from the memo"  # type: ignore[index]


@pytest.mark.slow
def test_discovery_reads_the_memo_and_an_edit_derives_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _unique(tmp_path)
    pack = _pack(tmp_path / "pack", source)
    cold = _discover(pack, monkeypatch)
    assert _discover(pack, monkeypatch) == cold
    assert set(cold["properties"]) == {"name", "times"}  # type: ignore[index]
    (pack / "greet" / "skill.py").write_text(source.replace("times: int = 1", "loud: bool"))
    edited = _discover(pack, monkeypatch)
    assert set(edited["properties"]) == {"name", "loud"}  # type: ignore[index]
    assert edited["required"] == ["name", "loud"]  # type: ignore[index]


@pytest.mark.slow
def test_a_memo_entry_of_the_wrong_shape_is_recomputed(tmp_path: Path) -> None:
    pack = _pack(tmp_path / "pack", _unique(tmp_path))
    manifest = load_skill_manifest(pack / "greet")
    first = derive_schema_memoized(pack / "greet", manifest)
    entry = _entry(pack)
    entry.write_text(json.dumps({"input_schema": "not a schema", "description": 3}))
    assert derive_schema_memoized(pack / "greet", manifest) == first
    assert json.loads(entry.read_text())["input_schema"] == first.input_schema


def test_an_invalid_schema_is_refused_every_time(cache_dir: Path) -> None:
    good = {"type": "object", "properties": {"n": {"type": "integer"}}}
    bad = {"type": "object", "properties": {"n": {"type": "integre"}}}
    for _ in range(2):
        assert check_json_schema(good, "input_schema") == good
        with pytest.raises(ValueError, match="not a valid JSON Schema at properties/n/type"):
            check_json_schema(bad, "input_schema")
    # Only the passing schema was remembered; the failure is recomputed to be reported.
    assert len(list((cache_dir / "derived").glob("schema-ok-*.json"))) == 1


def test_a_remembered_schema_still_gets_the_object_rule(cache_dir: Path) -> None:
    schema = {"type": "string"}
    check_json_schema(schema, "output_schema")  # valid as an output schema: remembered
    with pytest.raises(ValueError, match="input_schema must have type 'object'"):
        check_json_schema(schema, "input_schema")
