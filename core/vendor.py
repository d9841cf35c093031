"""``bastion pack vendor``: a skill's pure-Python dependencies unpacked into its ``_vendor/``.

For each Python skill of a pack that declares ``dependencies`` in ``skill.toml``, pip resolves
them to wheels (``pip download --only-binary=:all:``, index options passed through, e.g.
``--no-index --find-links DIR``). Every wheel must be pure Python (tag ``none-any``,
``Root-Is-Purelib: true``, no compiled files): one that is not is refused with its name and the
compiled file, because native code cannot run in WebAssembly. The wheels are unpacked into
``_vendor/`` (their ``.dist-info`` keeps each license) and every file's sha256 is written to
``vendor.lock.json``, which the host checks before the folder is mapped into the guest.
Wheels are only unzipped, never installed or imported: nothing of them runs on the host.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .errors import PackError
from .manifest import SKILL_MANIFEST, load_pack_manifest, load_skill_manifest
from .vendorlock import LOCK_FILE, VENDOR_DIR, VendorLock, file_sha256

__all__ = [
    "VendorError",
    "VendoredSkill",
    "check_wheel",
    "unpack_wheels",
    "vendor_pack",
    "vendor_skill",
]

_COMPILED: Final = (".so", ".pyd", ".dylib", ".dll", ".a", ".o", ".wasm")
_MAX_WHEEL_BYTES: Final[int] = 64 << 20
_MAX_UNPACKED: Final[int] = 256 << 20
PIP_TIMEOUT_S: Final[float] = 600.0


class VendorError(PackError):
    """A dependency could not be vendored (pip failed, a wheel is not pure Python, ...)."""

    code = "VENDOR_FAILED"


@dataclass(frozen=True, slots=True)
class VendoredSkill:
    """One skill's vendoring: the wheels unpacked and the files locked."""

    skill: str
    packages: tuple[dict[str, str], ...]
    files: int


def _wheel_meta(zf: zipfile.ZipFile, name: str) -> tuple[str, str, str]:
    """``(distribution, version, WHEEL file text)`` of a wheel."""
    infos = [i for i in zf.namelist() if i.endswith(".dist-info/WHEEL") and i.count("/") == 1]
    if len(infos) != 1:
        raise VendorError(f"{name} is not a wheel (no single .dist-info/WHEEL)")
    wheel = zf.read(infos[0]).decode("utf-8", "replace")
    dist, _, version = infos[0].split("/")[0][: -len(".dist-info")].partition("-")
    return dist, version, wheel


def check_wheel(path: Path) -> tuple[str, str]:
    """Refuse a wheel that is not pure Python; returns ``(distribution, version)``."""
    name = path.name
    tags = name[:-4].split("-")[-3:] if name.endswith(".whl") else []
    if len(tags) != 3:
        raise VendorError(f"{name!r} is not a wheel file name")
    if path.stat().st_size > _MAX_WHEEL_BYTES:
        raise VendorError(f"wheel {name!r} is larger than {_MAX_WHEEL_BYTES >> 20} MiB")
    with zipfile.ZipFile(path) as zf:
        dist, version, wheel = _wheel_meta(zf, name)
        compiled = next((n for n in zf.namelist() if n.lower().endswith(_COMPILED)), None)
        purelib = any(
            line.split(":", 1)[1].strip().lower() == "true"
            for line in wheel.splitlines()
            if line.lower().startswith("root-is-purelib:")
        )
    why = None
    if compiled is not None:
        why = f"it contains compiled code ({compiled})"
    elif tags[1] != "none" or tags[2] != "any":
        why = f"its tags {'-'.join(tags)!r} are for a specific Python ABI or platform"
    elif not purelib:
        why = "its WHEEL file says Root-Is-Purelib: false"
    if why is not None:
        raise VendorError(
            f"dependency {dist} {version} ({name}) is not pure Python: {why}; native code "
            "cannot run in WebAssembly",
            fix="use a pure-Python alternative, or drop the dependency",
        )
    return dist, version


def _safe_member(member: str) -> str | None:
    """The member's path inside ``_vendor/`` or None for one that must not be unpacked."""
    norm = posixpath.normpath(member)
    if member.endswith("/") or norm.startswith(("/", "../")) or norm == ".." or "\\" in member:
        return None
    top = norm.split("/", 1)[0]
    if top.endswith(".data"):  # scripts, headers, data files: not importable code
        return None
    return norm


def unpack_wheels(wheels: Sequence[Path], dest: Path) -> dict[str, str]:
    """Unzip pure-Python wheels into ``dest`` (created afresh); returns ``{rel path: sha256}``."""
    files: dict[str, str] = {}
    total = 0
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            for info in zf.infolist():
                rel = _safe_member(info.filename)
                if rel is None or rel.endswith(".dist-info/RECORD"):
                    continue
                total += info.file_size
                if total > _MAX_UNPACKED:
                    raise VendorError(
                        f"the dependencies unpack to more than {_MAX_UNPACKED >> 20} MiB"
                    )
                if rel in files:
                    raise VendorError(f"two wheels both contain {rel!r}")
                out = dest / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                data = zf.read(info)
                out.write_bytes(data)
                files[rel] = hashlib.sha256(data).hexdigest()
    return files


def _download(requirements: Sequence[str], dest: Path, pip_args: Sequence[str]) -> list[Path]:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--no-input",
        "--only-binary=:all:",
        "--dest",
        str(dest),
        *pip_args,
        *requirements,
    ]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False, env=env
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VendorError(f"pip could not run: {exc}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
        raise VendorError(
            f"pip could not resolve {list(requirements)!r} to wheels: " + " | ".join(tail),
            fix="check the names and versions, or pass --find-links/--index-url",
        )
    wheels = sorted(dest.glob("*.whl"))
    others = sorted(p.name for p in dest.iterdir() if p.suffix != ".whl")
    if others:
        raise VendorError(f"pip produced files that are not wheels: {others}")
    return wheels


def vendor_skill(folder: Path, pip_args: Sequence[str] = ()) -> VendoredSkill | None:
    """Vendor one skill folder's dependencies (None if it declares none)."""
    manifest = load_skill_manifest(folder)
    vendor = folder / VENDOR_DIR
    lock_path = folder / LOCK_FILE
    if not manifest.dependencies:
        return None
    with tempfile.TemporaryDirectory(prefix=".vendor-", dir=folder) as tmp:
        work = Path(tmp)
        wheels = _download(manifest.dependencies, work / "wheels", pip_args)
        packages = []
        for wheel in wheels:
            dist, version = check_wheel(wheel)
            packages.append(
                {
                    "name": dist,
                    "version": version,
                    "wheel": wheel.name,
                    "sha256": file_sha256(wheel),
                }
            )
        staged = work / "vendor"
        staged.mkdir()
        files = unpack_wheels(wheels, staged)
        lock = VendorLock(tuple(manifest.dependencies), tuple(packages), files)
        (work / LOCK_FILE).write_text(
            json.dumps(lock.to_json(), indent=1, sort_keys=True) + "\n", encoding="utf-8"
        )
        if vendor.exists():
            shutil.rmtree(vendor)
        os.replace(staged, vendor)
        os.replace(work / LOCK_FILE, lock_path)
    return VendoredSkill(manifest.name, tuple(packages), len(files))


def vendor_pack(pack: Path, pip_args: Sequence[str] = ()) -> list[VendoredSkill]:
    """Vendor every skill of the pack folder ``pack`` that declares dependencies."""
    pm = load_pack_manifest(pack)
    done = []
    for rel in pm.skills:
        folder = pack / rel
        if not (folder / SKILL_MANIFEST).is_file():
            continue
        result = vendor_skill(folder, pip_args)
        if result is not None:
            done.append(result)
    return done
