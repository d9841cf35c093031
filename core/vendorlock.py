"""The vendor lock: every file of a skill's ``_vendor/`` folder with its sha256.

``bastion pack vendor`` writes ``vendor.lock.json`` beside ``_vendor/``; the host checks it
before the folder is mapped into the guest (at discovery and before every call), so a file
changed, added or removed after vendoring is refused, naming the file. A check is remembered
per process by every file's size and modification time, so an unchanged folder is not
rehashed on every call.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .errors import ManifestError

__all__ = [
    "LOCK_FILE",
    "LOCK_FORMAT",
    "VENDOR_DIR",
    "VendorLock",
    "file_sha256",
    "read_lock",
    "verify_vendor",
]

VENDOR_DIR: Final[str] = "_vendor"
LOCK_FILE: Final[str] = "vendor.lock.json"
LOCK_FORMAT: Final[str] = "bastion-vendor-1"
_MAX_LOCK_BYTES: Final[int] = 8 << 20
_MAX_FILES: Final[int] = 20_000
_FIX: Final[str] = "run `bastion pack vendor PACK` again to re-vendor the dependencies"

_verified: dict[Path, tuple[tuple[str, int, int], ...]] = {}
_verified_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class VendorLock:
    """What was vendored: the requirements, the wheels (name, version, sha256) and the files."""

    requirements: tuple[str, ...]
    packages: tuple[dict[str, str], ...]
    files: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": LOCK_FORMAT,
            "requirements": list(self.requirements),
            "packages": list(self.packages),
            "files": dict(sorted(self.files.items())),
        }


def file_sha256(path: Path) -> str:
    """sha256 of one file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def read_lock(folder: Path) -> VendorLock | None:
    """The skill folder's lock, or None if it has none; a malformed lock is a ManifestError."""
    path = folder / LOCK_FILE
    if not path.exists():
        return None
    source = str(path)
    try:
        if path.is_symlink() or not path.is_file():
            raise ManifestError(f"{LOCK_FILE} is not a regular file", source=source, fix=_FIX)
        with open(path, "rb") as f:
            raw = f.read(_MAX_LOCK_BYTES + 1)
    except OSError as exc:
        raise ManifestError(f"cannot read {LOCK_FILE} ({exc.strerror})", source=source) from None
    if len(raw) > _MAX_LOCK_BYTES:
        raise ManifestError(f"{LOCK_FILE} is larger than {_MAX_LOCK_BYTES} bytes", source=source)
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise ManifestError(f"{LOCK_FILE} is not valid JSON", source=source, fix=_FIX) from None
    files = data.get("files") if isinstance(data, dict) else None
    if (
        not isinstance(data, dict)
        or data.get("format") != LOCK_FORMAT
        or not isinstance(files, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())
    ):
        raise ManifestError(f"{LOCK_FILE} is not a {LOCK_FORMAT!r} lock", source=source, fix=_FIX)
    reqs = data.get("requirements", [])
    pkgs = data.get("packages", [])
    return VendorLock(
        requirements=tuple(str(r) for r in reqs) if isinstance(reqs, list) else (),
        packages=tuple(p for p in pkgs if isinstance(p, dict)) if isinstance(pkgs, list) else (),
        files=dict(files),
    )


def _walk(vendor: Path) -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(vendor, followlinks=False):
        base = Path(dirpath)
        for d in list(dirnames):
            if (base / d).is_symlink():
                raise ManifestError(
                    f"{VENDOR_DIR}/{(base / d).relative_to(vendor).as_posix()} is a symbolic "
                    "link; vendored files must be regular files",
                    source=str(vendor),
                    fix=_FIX,
                )
            if d == "__pycache__":
                dirnames.remove(d)
        for name in filenames:
            p = base / name
            out.append((p.relative_to(vendor).as_posix(), p))
            if len(out) > _MAX_FILES:
                raise ManifestError(
                    f"{VENDOR_DIR}/ holds more than {_MAX_FILES} files", source=str(vendor)
                )
    return sorted(out)


def verify_vendor(folder: Path, dependencies: Sequence[str] | None = ()) -> VendorLock | None:
    """Check ``folder/_vendor`` against ``folder/vendor.lock.json``; raise ManifestError naming
    the first file that differs. ``dependencies`` (skill.toml) must match the lock's; ``None``
    skips that comparison (a call re-checks the files; discovery checked the requirements)."""
    vendor = folder / VENDOR_DIR
    lock = read_lock(folder)
    source = str(folder / LOCK_FILE)
    if lock is None:
        if dependencies:  # None or empty: nothing declared here
            raise ManifestError(
                f"the skill declares dependencies {list(dependencies)!r} but has no {LOCK_FILE}",
                source=str(folder),
                fix="run `bastion pack vendor PACK` to vendor them into the skill's _vendor/",
            )
        if vendor.exists():
            raise ManifestError(
                f"{VENDOR_DIR}/ exists but there is no {LOCK_FILE} to check it against",
                source=str(folder),
                fix=_FIX,
            )
        return None
    if dependencies is not None and sorted(lock.requirements) != sorted(dependencies):
        raise ManifestError(
            f"{LOCK_FILE} was made for {list(lock.requirements)!r} but skill.toml declares "
            f"{list(dependencies)!r}",
            source=source,
            fix=_FIX,
        )
    if vendor.is_symlink() or (lock.files and not vendor.is_dir()):
        raise ManifestError(f"{VENDOR_DIR}/ is missing or not a folder", source=source, fix=_FIX)
    files = _walk(vendor) if vendor.is_dir() else []
    try:
        signature = tuple((rel, (st := p.lstat()).st_size, st.st_mtime_ns) for rel, p in files)
    except OSError as exc:
        raise ManifestError(f"cannot read {VENDOR_DIR}/ ({exc.strerror})", source=source) from None
    key = vendor.resolve()
    with _verified_lock:
        if _verified.get(key) == signature:
            return lock
    seen: set[str] = set()
    for rel, path in files:
        want = lock.files.get(rel)
        if path.is_symlink() or not path.is_file():
            raise ManifestError(
                f"{VENDOR_DIR}/{rel} is not a regular file", source=source, fix=_FIX
            )
        if want is None:
            raise ManifestError(
                f"{VENDOR_DIR}/{rel} is not in {LOCK_FILE} (added after vendoring?)",
                source=source,
                fix=f"remove it, or {_FIX}",
            )
        if file_sha256(path) != want:
            raise ManifestError(
                f"{VENDOR_DIR}/{rel} does not match its sha256 in {LOCK_FILE} (changed after "
                "vendoring)",
                source=source,
                fix=_FIX,
            )
        seen.add(rel)
    missing = sorted(set(lock.files) - seen)
    if missing:
        raise ManifestError(
            f"{VENDOR_DIR}/{missing[0]} is listed in {LOCK_FILE} but missing",
            source=source,
            fix=_FIX,
        )
    with _verified_lock:
        _verified[key] = signature
    return lock
