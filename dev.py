#!/usr/bin/env python3
"""Set-up and the two project commands, needing nothing but python3.

    python3 dev.py demo    create .venv, install Bastion and the first-party packs, run the demo
    python3 dev.py test    the same set-up, then ruff, mypy and the whole test suite

The virtual environment is re-installed only when a pyproject.toml changed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".bastion-install-stamp"
LINTED = ["core", "sandbox", "tests", "bench", "plugins", "dev.py"]


def _packs() -> list[Path]:
    return sorted(p for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").is_file())


def _fingerprint() -> str:
    h = hashlib.sha256()
    for f in [ROOT / "pyproject.toml", *(p / "pyproject.toml" for p in _packs())]:
        h.update(str(f.relative_to(ROOT)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _pip(cmd: list[str]) -> None:
    """Run a pip command; its output (setuptools' build warnings) is shown only if it fails."""
    print("+ " + " ".join(str(c) for c in cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"dev.py: pip failed with status {proc.returncode} (output above)")


def setup() -> None:
    """Create the venv and install the project (with dev tools) and every pack, editable."""
    if sys.version_info < (3, 11):  # noqa: UP036 (dev.py may be run by an older python3)
        sys.exit(f"Bastion needs Python 3.11 or later; this is {sys.version.split()[0]}")
    if not PY.exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    _system_packages()
    want = _fingerprint()
    if not (STAMP.exists() and STAMP.read_text() == want):
        _install()
        STAMP.write_text(want)
    _compile_bytecode()


SYSTEM_PACKAGES = {"redis-server": "redis-server", "haproxy": "haproxy"}
"""Debian packages the tests start as real processes (program -> package)."""


def _system_packages() -> None:
    """Install Debian's redis-server and haproxy when missing (as root), else say what to run."""
    import shutil

    missing = [pkg for prog, pkg in SYSTEM_PACKAGES.items() if shutil.which(prog) is None]
    if not missing:
        return
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("apt-get") is None:
        print(
            "dev.py: the Redis and load-balancer tests need "
            + ", ".join(missing)
            + "; install with: sudo apt-get update && sudo apt-get install -y "
            + " ".join(missing)
            + " (those tests are skipped without them)",
            flush=True,
        )
        return
    print("+ apt-get update && apt-get install -y " + " ".join(missing), flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", *missing]):
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
        if proc.returncode != 0:
            sys.stdout.write(proc.stdout[-4000:])
            sys.stderr.write(proc.stderr[-4000:])
            raise SystemExit(f"dev.py: {cmd[0]} {cmd[1]} failed with status {proc.returncode}")


def _compile_bytecode() -> None:
    """Write the bytecode of Bastion's own modules here, once per change.

    The commands below run with ``PYTHONDONTWRITEBYTECODE=1`` (these machines set it; so does
    ``main`` so every machine behaves alike), which leaves each process to recompile every
    module it imports from the source tree: ~0.3 s per CLI process. That setting only stops
    *writing*; bytecode written by ``compileall`` is still read. The guest runner's sources are
    data for componentize-py and are left alone.
    """
    subprocess.run(
        [str(PY), "-m", "compileall", "-q", "-j", "0", "-x", r"[/\\]guest[/\\]", "core", "sandbox"],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def _install() -> None:
    print("installing Bastion, its tools and the first-party packs (a minute or two)", flush=True)
    _pip([str(PY), "-m", "pip", "install", "--upgrade", "pip", "setuptools>=77", "wheel"])
    cmd = [str(PY), "-m", "pip", "install", "-e", f"{ROOT}[dev,metrics]"]
    for pack in _packs():
        cmd += ["-e", str(pack)]
    _pip(cmd)


def typecheck_tree() -> Path:
    """A symlink tree laying core/ and sandbox/ out as the package ``bastion`` for mypy.

    setuptools maps core/ -> bastion and sandbox/ -> bastion.sandbox; mypy cannot follow the
    editable-install finder, so it checks this tree instead (it only holds links).
    """
    tree = ROOT / "build" / "typecheck"
    pkg = tree / "bastion"
    if pkg.exists():
        for item in pkg.iterdir():
            item.unlink()
    pkg.mkdir(parents=True, exist_ok=True)
    for src in (ROOT / "core").glob("*.py"):
        (pkg / src.name).symlink_to(src)
    # Subpackages (core/serve/, core/state/, ...): every folder of core/ holding an __init__.py.
    for sub in (ROOT / "core").iterdir():
        if sub.is_dir() and (sub / "__init__.py").is_file():
            (pkg / sub.name).symlink_to(sub, target_is_directory=True)
    (pkg / "py.typed").touch()
    (pkg / "sandbox").symlink_to(ROOT / "sandbox", target_is_directory=True)
    return tree


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "setup"):
        print(__doc__)
        return 2
    setup()
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    if argv[0] == "demo":
        return subprocess.call([str(BIN / "bastion"), "demo", *argv[1:]], env=env)
    if argv[0] == "test":
        steps = [
            [str(PY), "-m", "ruff", "check", *LINTED],
            [str(PY), "-m", "ruff", "format", "--check", *LINTED],
            [str(PY), "-m", "mypy", str(typecheck_tree() / "bastion")],
            [str(PY), "-m", "pytest", "-p", "no:cacheprovider", *argv[1:]],
        ]
        for step in steps:
            print("+ " + " ".join(step[2:]), flush=True)
            rc = subprocess.call(step, cwd=ROOT, env=env)
            if rc != 0:
                # pytest's 5 ("no tests collected") is a failure here, like any other non-zero.
                return rc
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
