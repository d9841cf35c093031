"""From ``bastion new`` to ``bastion run``, as an author would: the new pack is pip-installed into
a fresh virtual environment layered on the project's (so Bastion and its dependencies are not
installed again), then its own pytest, ``bastion test`` and ``bastion run`` must all pass."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BASTION = [sys.executable, "-m", "bastion.cli"]


def _run(
    cmd: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    return proc


def _layered_venv(path: Path) -> Path:
    """A venv whose site-packages also loads the project's (editable Bastion and its deps)."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=300
    )
    python = path / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    parent = sysconfig.get_paths()["purelib"]
    Path(site.strip(), "_bastion_parent.pth").write_text(
        f"import site; site.addsitedir({parent!r})\n"
    )
    return python


def test_new_install_pytest_test_run(tmp_path: Path, runner_ready: None) -> None:
    proc = _run([*BASTION, "new", "word_stats", "--dir", str(tmp_path / "pack")], tmp_path)
    assert proc.returncode == 0, proc.stderr
    pack = tmp_path / "pack"
    assert str(pack) in proc.stdout

    python = _layered_venv(tmp_path / "venv")
    # A regular (non-editable) install, as from a wheel. pip builds it in an isolated
    # environment, fetching setuptools and wheel as the pack's build-system asks (cached after).
    proc = _run([str(python), "-m", "pip", "install", "--no-deps", "--quiet", str(pack)], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    installed = _run([str(python), "-m", "pip", "show", "-f", "bastion-pack-word-stats"], tmp_path)
    assert "bastion_pack_word_stats/word_stats/skill.toml" in installed.stdout
    assert "bastion_pack_word_stats/bastion-pack.toml" in installed.stdout

    env = dict(os.environ)
    policy = tmp_path / "bastion.toml"
    policy.write_text(f'[audit]\npath = "{(tmp_path / "audit.jsonl").as_posix()}"\n')
    env["BASTION_POLICY"] = str(policy)

    proc = _run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"], pack, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "9 passed" in proc.stdout

    venv_bastion = [str(python), "-m", "bastion.cli"]
    for target in (str(pack), "bastion-pack-word-stats"):
        proc = _run(
            [*venv_bastion, "test", target, "--json-report", str(tmp_path / "report.json")],
            tmp_path,
            env,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "conformance: OK" in proc.stdout
    assert json.loads((tmp_path / "report.json").read_text())["ok"] is True

    proc = _run([*venv_bastion, "skills", "--json"], tmp_path, env)
    skills = {s["name"]: s for s in json.loads(proc.stdout)["skills"]}
    assert skills["word_stats"]["granted"] is True
    assert skills["word_stats"]["pack"] == "word-stats"

    proc = _run(
        [
            *venv_bastion,
            "run",
            "word_stats",
            "--input",
            '{"text": "hello bastion", "shout": true}',
            "--json",
        ],
        tmp_path,
        env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    envelope = json.loads(proc.stdout)
    assert envelope["ok"] is True
    assert envelope["output"] == {"words": 2, "longest": "bastion", "text": "HELLO BASTION"}

    # The project's own interpreter does not see the pack: it was installed in the new venv only.
    proc = _run(
        [*BASTION, "run", "word_stats", "--input", '{"text": "x"}', "--json"], tmp_path, env
    )
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["error"]["code"] == "NOT_FOUND"
