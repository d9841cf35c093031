"""Vendored pure-Python dependencies: ``bastion pack vendor`` with pip against a local wheel
folder (no network), the lock checked at load and before every call, compiled wheels refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.kernel import Kernel
from bastion.policy import load_policy
from tests.python_skills.wheels import make_wheel

pytestmark = pytest.mark.slow

SKILL_TOML = (
    'name = "slugger"\nversion = "1.0.0"\nruntime = "python"\nentry = "slugger/__init__.py"\n'
    'dependencies = ["tinyslug>=1.0"]\n'
)
SKILL = {
    "slugger/__init__.py": "from .main import run\n",
    "slugger/main.py": (
        "import tinyslug\nfrom . import words\n"
        "def run(title: str) -> dict[str, object]:\n"
        '    """Slug a title."""\n'
        "    return {'slug': tinyslug.slug(title), 'words': words.count(title),\n"
        "            'version': tinyslug.__version__}\n"
    ),
    "slugger/words.py": "def count(s):\n    return len(s.split())\n",
}
TINYSLUG = {
    "tinyslug/__init__.py": (
        "import sys, re\nfrom tinyslug._impl import slug\n__version__ = '1.2.0'\n"
        "PY = sys.version_info[:2]\n"
    ),
    "tinyslug/_impl.py": (
        "import re\ndef slug(s):\n    return re.sub(r'[^a-z0-9]+', '-', s.lower()).strip('-')\n"
    ),
}


def _pack(root: Path, toml: str = SKILL_TOML) -> Path:
    root.mkdir(parents=True)
    (root / "bastion-pack.toml").write_text('name = "v"\nversion = "1.0.0"\nskills = ["slugger"]\n')
    (root / "slugger").mkdir()
    (root / "slugger" / "skill.toml").write_text(toml)
    for rel, text in SKILL.items():
        path = root / "slugger" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _vendor(pack: Path, links: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "bastion.cli",
            "pack",
            "vendor",
            str(pack),
            "--no-index",
            "--find-links",
            str(links),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _kernel(pack: Path, tmp_path: Path) -> Kernel:
    return Kernel(
        load_policy(text=f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n'),
        pack_paths=[pack],
        entry_points=False,
        environ={},
    )


@pytest.fixture
def vendored(tmp_path: Path) -> Path:
    links = tmp_path / "links"
    make_wheel(links, "tinyslug", "1.2.0", TINYSLUG)
    pack = _pack(tmp_path / "pack")
    proc = _vendor(pack, links)
    assert proc.returncode == 0, proc.stderr
    assert "slugger: vendored tinyslug 1.2.0" in proc.stdout
    return pack


def test_a_package_skill_imports_its_sibling_module_and_vendored_dependency(
    vendored: Path, tmp_path: Path
) -> None:
    folder = vendored / "slugger"
    lock = json.loads((folder / "vendor.lock.json").read_text())
    assert lock["requirements"] == ["tinyslug>=1.0"]
    assert [p["name"] for p in lock["packages"]] == ["tinyslug"]
    assert "tinyslug/_impl.py" in lock["files"]
    assert "tinyslug-1.2.0.dist-info/licenses/LICENSE" in lock["files"]  # the license travels
    assert (folder / "_vendor" / "tinyslug" / "__init__.py").is_file()
    kernel = _kernel(vendored, tmp_path)
    try:
        assert not kernel.problems, kernel.problems
        result = kernel.invoke("slugger", {"title": "Hello, Wasm World"})
        assert result.ok, result.error
        assert result.output == {"slug": "hello-wasm-world", "words": 3, "version": "1.2.0"}
    finally:
        kernel.close()


@pytest.mark.parametrize(
    "damage",
    ["edit", "add", "remove"],
)
def test_a_tampered_vendored_folder_is_refused_at_load_naming_the_file(
    vendored: Path, tmp_path: Path, damage: str
) -> None:
    impl = vendored / "slugger" / "_vendor" / "tinyslug" / "_impl.py"
    if damage == "edit":
        impl.write_text(impl.read_text() + "\nimport os  # injected\n")
        expect = "_vendor/tinyslug/_impl.py does not match its sha256"
    elif damage == "add":
        (impl.parent / "extra.py").write_text("X = 1\n")
        expect = "_vendor/tinyslug/extra.py is not in vendor.lock.json"
    else:
        impl.unlink()
        expect = "_vendor/tinyslug/_impl.py is listed in vendor.lock.json but missing"
    kernel = _kernel(vendored, tmp_path)
    try:
        assert kernel.skill("slugger") is None
        assert any(expect in p.message for p in kernel.problems), kernel.problems
    finally:
        kernel.close()


def test_a_file_tampered_after_load_is_refused_before_the_call(
    vendored: Path, tmp_path: Path
) -> None:
    kernel = _kernel(vendored, tmp_path)
    try:
        assert kernel.invoke("slugger", {"title": "a b"}).ok
        impl = vendored / "slugger" / "_vendor" / "tinyslug" / "_impl.py"
        impl.write_text("def slug(s):\n    return 'pwned'\n")
        result = kernel.invoke("slugger", {"title": "a b"})
        assert not result.ok and result.error is not None
        assert "_vendor/tinyslug/_impl.py does not match its sha256" in result.error.message
    finally:
        kernel.close()


def test_a_wheel_with_compiled_code_is_refused_at_vendor_time_naming_it(tmp_path: Path) -> None:
    links = tmp_path / "links"
    tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    make_wheel(
        links,
        "tinyslug",
        "1.2.0",
        {**TINYSLUG, "tinyslug/_speedups.cpython-311-x86_64-linux-gnu.so": b"\x7fELF"},
        tag=f"{tag}-{tag}-linux_x86_64",
        purelib=False,
    )
    pack = _pack(tmp_path / "pack")
    proc = _vendor(pack, links)
    assert proc.returncode == 2, proc.stdout
    assert "dependency tinyslug 1.2.0" in proc.stderr
    assert "tinyslug/_speedups.cpython-311-x86_64-linux-gnu.so" in proc.stderr
    assert "cannot run in WebAssembly" in proc.stderr
    assert not (pack / "slugger" / "_vendor").exists()
    assert not (pack / "slugger" / "vendor.lock.json").exists()


def test_dependencies_without_a_vendored_folder_name_the_command(tmp_path: Path) -> None:
    pack = _pack(tmp_path / "pack")
    kernel = _kernel(pack, tmp_path)
    try:
        assert kernel.skill("slugger") is None
        assert any("bastion pack vendor" in p.message for p in kernel.problems), kernel.problems
    finally:
        kernel.close()


def test_a_lock_for_other_requirements_is_stale(vendored: Path, tmp_path: Path) -> None:
    toml = vendored / "slugger" / "skill.toml"
    toml.write_text(toml.read_text().replace("tinyslug>=1.0", "tinyslug>=1.1"))
    kernel = _kernel(vendored, tmp_path)
    try:
        assert kernel.skill("slugger") is None
        assert any("was made for ['tinyslug>=1.0']" in p.message for p in kernel.problems)
    finally:
        kernel.close()
