"""The private cache directory: compiled WASM, the built runner and memoized derivations.

Compiled code there is loaded and run, so the directory is a trust boundary: it is created with
mode 0700; one owned by another user, or writable by group or others (anyone could have put code
there), is refused with ``CACHE_UNSAFE`` (exit status 2). ``secure_dir`` runs on every use that
writes, so a folder deleted while the process runs is re-created and refilled.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

from .errors import ConfigError

__all__ = ["CACHE_ENV", "CacheDirError", "check_dir", "default_cache_root", "secure_dir"]

CACHE_ENV: Final[str] = "BASTION_CACHE_DIR"
"""Environment variable overriding the cache directory."""


class CacheDirError(ConfigError):
    """The cache directory is unsafe (owned by another user) or unusable."""

    code = "CACHE_UNSAFE"


def default_cache_root() -> Path:
    """``$BASTION_CACHE_DIR``, else ``compiled`` under the user's cache directory."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("bastion")) / "compiled"


def secure_dir(root: Path) -> Path:
    """Create ``root`` with mode 0700, fix loose permissions, refuse a foreign owner."""
    from .logs import get_logger

    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = root.stat()
    except OSError as exc:
        raise CacheDirError(
            f"cannot create cache directory {str(root)!r}: {exc.strerror}",
            fix=f"set {CACHE_ENV} to a writable directory",
        ) from exc
    mode = _refuse_unsafe(root, st)
    if mode & 0o055:
        os.chmod(root, 0o700)
        get_logger("bastion.cachedir").warning(
            "cache.permissions_fixed", path=str(root), mode=oct(mode)
        )
    return root


def check_dir(root: Path) -> Path:
    """``secure_dir``'s refusals without creating or fixing anything: for a worker, which only
    reads the cache (a missing or unreadable folder is a ``CacheDirError`` too)."""
    try:
        st = root.stat()
    except OSError as exc:
        raise CacheDirError(
            f"cache directory {str(root)!r} cannot be read: {exc.strerror}",
            fix=f"set {CACHE_ENV} to a private directory you own",
        ) from exc
    _refuse_unsafe(root, st)
    return root


def _refuse_unsafe(root: Path, st: os.stat_result) -> int:
    """Raise ``CacheDirError`` unless ``st`` is a directory of this user that no one else may
    write; returns its permission bits."""
    if not stat.S_ISDIR(st.st_mode):
        raise CacheDirError(
            f"cache path {str(root)!r} is not a directory",
            fix=f"remove it or set {CACHE_ENV}",
        )
    if st.st_uid != os.getuid():
        raise CacheDirError(
            f"cache directory {str(root)!r} is owned by uid {st.st_uid}, "
            f"not by this user (uid {os.getuid()}); what is cached there cannot be trusted",
            fix=f"remove it or set {CACHE_ENV} to a directory you own",
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise CacheDirError(
            f"cache directory {str(root)!r} has mode {oct(mode)}: writable by others, so what is "
            "cached there cannot be trusted",
            fix=f"remove it (it is rebuilt) or set {CACHE_ENV} to a private directory",
        )
    return mode
