"""The private cache directory: compiled WASM, the built runner and memoized derivations.

Compiled code there is loaded and run, so the directory is a trust boundary: it is created with
mode 0700, loose permissions are tightened, and a directory owned by another user is refused.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

from .errors import ConfigError

__all__ = ["CACHE_ENV", "CacheDirError", "default_cache_root", "secure_dir"]

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
    import structlog

    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = root.stat()
    except OSError as exc:
        raise CacheDirError(
            f"cannot create cache directory {str(root)!r}: {exc.strerror}",
            fix=f"set {CACHE_ENV} to a writable directory",
        ) from exc
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
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(root, 0o700)
        structlog.get_logger("bastion.cachedir").warning(
            "cache.permissions_fixed", path=str(root), mode=oct(stat.S_IMODE(st.st_mode))
        )
    return root
