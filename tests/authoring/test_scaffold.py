"""``bastion new``: names, folders and the filled-in template."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from bastion.errors import ConfigError
from bastion.scaffold import create_pack, pack_names, template_dir


def test_names_derived_from_the_skill_name() -> None:
    names = pack_names("word_stats")
    assert names["dist"] == "bastion-pack-word-stats"
    assert names["package"] == "bastion_pack_word_stats"


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("Word-Stats", "'word_stats'"),
        ("9lives", "'skill_9lives'"),
        ("", None),
        ("a" * 65, "'" + "a" * 64 + "'"),
        ("has space", "'has_space'"),
    ],
)
def test_invalid_names_are_refused_with_a_fix(name: str, hint: str | None, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        create_pack(name, tmp_path / "p")
    message = str(info.value)
    assert f"skill name {name[:80]!r} is not valid" in message
    assert "^[a-z][a-z0-9_]{0,63}$" in message
    if hint:
        assert f"e.g. {hint}" in message
    assert not (tmp_path / "p").exists()


def test_an_existing_non_empty_folder_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError) as info:
        create_pack("word_stats", target)
    assert "already exists and is not empty" in str(info.value)
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]


def test_the_pack_is_created_with_every_placeholder_filled(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    folder = create_pack("word_stats", tmp_path / "empty")
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "bastion_pack_word_stats/__init__.py",
        "bastion_pack_word_stats/bastion-pack.toml",
        "bastion_pack_word_stats/word_stats/skill.py",
        "bastion_pack_word_stats/word_stats/skill.toml",
        "pyproject.toml",
        "tests/test_conformance.py",
    ]
    for rel in files:
        assert "{{" not in (folder / rel).read_text(), rel
    project = tomllib.loads((folder / "pyproject.toml").read_text())
    assert project["project"]["name"] == "bastion-pack-word-stats"
    assert project["project"]["entry-points"]["bastion"] == {
        "word_stats": "bastion_pack_word_stats"
    }
    skill = tomllib.loads((folder / "bastion_pack_word_stats/word_stats/skill.toml").read_text())
    assert skill["name"] == "word_stats" and skill["examples"]


def test_default_folder_is_named_after_the_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert create_pack("hello") == tmp_path / "bastion-pack-hello"


def test_the_template_is_the_repository_folder() -> None:
    assert template_dir() == Path(__file__).resolve().parents[2] / "skill-template"


@pytest.mark.slow
def test_a_new_pack_passes_the_conformance_kit(tmp_path: Path, runner_ready: None) -> None:
    from bastion.testing import check_pack

    report = check_pack(create_pack("word_stats", tmp_path / "p"))
    assert report.ok, report.render()
