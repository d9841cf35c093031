"""Small wheels written by the tests themselves (no network): pure Python or with a fake C
extension, in a folder pip reads with ``--no-index --find-links``."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

__all__ = ["make_wheel"]


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def make_wheel(
    folder: Path,
    dist: str,
    version: str,
    files: dict[str, str | bytes],
    *,
    tag: str = "py3-none-any",
    purelib: bool = True,
    requires: tuple[str, ...] = (),
) -> Path:
    """Write ``{dist}-{version}-{tag}.whl`` holding ``files`` and valid wheel metadata."""
    folder.mkdir(parents=True, exist_ok=True)
    norm = dist.replace("-", "_")
    info = f"{norm}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\nLicense: MIT\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires)
    members: dict[str, bytes] = {
        name: data.encode() if isinstance(data, str) else data for name, data in files.items()
    }
    members[f"{info}/METADATA"] = metadata.encode()
    members[f"{info}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: bastion-tests\n"
        f"Root-Is-Purelib: {'true' if purelib else 'false'}\nTag: {tag}\n"
    ).encode()
    members[f"{info}/licenses/LICENSE"] = b"MIT License (test fixture)\n"
    record = [_record_line(n, d) for n, d in members.items()] + [f"{info}/RECORD,,"]
    members[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = folder / f"{norm}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path
