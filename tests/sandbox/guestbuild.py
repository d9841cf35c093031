"""Build test guests: C via ``python -m ziglang cc -target wasm32-wasi``, WAT via wat2wasm.

Built C modules are cached on disk, keyed by the source, the flags and the zig version, under
``$BASTION_GUEST_CACHE`` or the user cache dir (never in the repository). Reusable by any test
or benchmark: ``build_c(Path("tests/sandbox/guests/echo.c"))``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import platformdirs
import wasmtime

__all__ = ["DEFAULT_FLAGS", "GUESTS", "build_c", "build_wat", "guest_cache_dir"]

DEFAULT_FLAGS: tuple[str, ...] = ("-O2", "-s", "-Wl,-z,stack-size=1048576")
"""Optimised, stripped, 1 MiB shadow stack (zig's default 16 MiB would not fit small limits)."""

GUESTS = Path(__file__).resolve().parent / "guests"
"""Folder holding the guest sources."""


def guest_cache_dir() -> Path:
    """Where built guests are cached (created private)."""
    env = os.environ.get("BASTION_GUEST_CACHE")
    root = Path(env) if env else Path(platformdirs.user_cache_dir("bastion")) / "test-guests"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    return root


@functools.cache
def _zig_version() -> str:
    out = subprocess.run(
        [sys.executable, "-m", "ziglang", "version"], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def build_c(src: Path, *, flags: Sequence[str] = DEFAULT_FLAGS) -> bytes:
    """Compile one C file to a WASI (preview 1) command module; cached by source hash."""
    source = Path(src).read_bytes()
    key = hashlib.sha256(
        b"\0".join([source, " ".join(flags).encode(), _zig_version().encode()])
    ).hexdigest()
    out = guest_cache_dir() / f"{Path(src).stem}-{key[:24]}.wasm"
    if out.is_file():
        return out.read_bytes()
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".wasm")
    os.close(fd)
    try:
        cmd = [
            sys.executable,
            "-m",
            "ziglang",
            "cc",
            "-target",
            "wasm32-wasi",
            *flags,
            str(src),
            "-o",
            tmp,
        ]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"building {str(src)!r} failed:\n{res.stderr}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out.read_bytes()


def build_wat(src: Path | str) -> bytes:
    """WAT text (a path to a ``.wat`` file, or the text itself) to module bytes."""
    if isinstance(src, Path):
        src = src.read_text()
    return bytes(wasmtime.wat2wasm(src))
