"""The authoring loop: ``bastion new PACK --skill NAME``, ``bastion add SKILL``, a ``--pack``
folder shadowing the installed copy, ``bastion doctor --modules``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bastion.discovery import discover
from bastion.errors import ConfigError
from bastion.plugins import make_plugin_manager
from bastion.policy import load_policy
from bastion.scaffold import add_skill, create_pack
from tests.authoring.conftest import PACKS


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=cwd,
    )


def test_new_names_the_pack_and_its_first_skill_separately(tmp_path: Path) -> None:
    folder = create_pack("weather", tmp_path / "w", skill="forecast")
    pack = folder / "bastion_pack_weather"
    manifest = tomllib.loads((pack / "bastion-pack.toml").read_text())
    assert manifest["name"] == "weather" and manifest["skills"] == ["forecast"]
    assert tomllib.loads((pack / "forecast" / "skill.toml").read_text())["name"] == "forecast"


def test_add_puts_a_skill_folder_and_its_manifest_line_in_the_pack(tmp_path: Path) -> None:
    folder = create_pack("weather", tmp_path / "w", skill="forecast")
    proc = _cli("add", "alerts", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    pack = folder / "bastion_pack_weather"
    assert tomllib.loads((pack / "bastion-pack.toml").read_text())["skills"] == [
        "forecast",
        "alerts",
    ]
    assert tomllib.loads((pack / "alerts" / "skill.toml").read_text())["name"] == "alerts"
    with pytest.raises(ConfigError, match="already has a skill or folder named 'alerts'"):
        add_skill("alerts", folder)
    with pytest.raises(ConfigError, match="is not valid"):
        add_skill("Bad-Name", folder)


@pytest.mark.slow
def test_a_pack_folder_shadows_the_installed_copy_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "data-copy"
    shutil.copytree(PACKS["data"], copy, ignore=shutil.ignore_patterns("__pycache__"))
    toml = copy / "calc" / "skill.toml"
    toml.write_text(toml.read_text().replace('version = "1.0.0"', 'version = "9.9.9"', 1))
    monkeypatch.setenv("BASTION_LOAD_PLUGINS", "bastion-pack-data")
    found = discover(load_policy(text=""), make_plugin_manager(), pack_paths=[copy])
    assert found.skills["calc"].version == "9.9.9"
    assert found.skills["calc"].folder == copy / "calc"
    shadowed = [p for p in found.problems if p.code == "PACK_SHADOWED"]
    assert shadowed and "is shadowed by --pack" in shadowed[0].message
    assert str(copy) in shadowed[0].message


@pytest.mark.slow
def test_doctor_lists_the_modules_of_the_built_runner() -> None:
    proc = _cli("doctor", "--modules", "--json")
    assert proc.returncode == 0, proc.stderr
    names = json.loads(proc.stdout)["modules"]
    assert "zoneinfo" in names and "asyncio" in names and "socket" not in names
