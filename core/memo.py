"""A persistent memo for pure derivations from content: derived schemas, metaschema checks.

Discovery repeats the same work in every process: parsing each Python skill's source to derive
its schema and checking each declared schema against the JSON Schema metaschema. Both are pure
functions of bytes, so their JSON results are kept in ``<cache dir>/derived`` under the sha256 of
everything they depend on. A changed byte is a different key; an unreadable or malformed entry is
a miss. The memo only ever saves time: every failure to read or write it is ignored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Final

from .cachedir import default_cache_root, secure_dir
from .errors import ConfigError

__all__ = ["MEMO_ENV", "Memo", "default_memo"]

MEMO_ENV: Final[str] = "BASTION_NO_MEMO"
"""Set to ``1`` to turn the memo off (every derivation is recomputed)."""

_FORMAT: Final[str] = "bastion-memo-1"
_MAX_ENTRIES: Final[int] = 4096
"""Past this many entries, a write prunes the least recently written quarter."""
_MAX_ENTRY_BYTES: Final[int] = 4 << 20


class Memo:
    """JSON values stored on disk under ``sha256(namespace, key parts)``."""

    def __init__(self, root: Path, *, max_entries: int = _MAX_ENTRIES) -> None:
        self.root = root
        self.max_entries = max_entries
        self._pruned = False
        self._lock = threading.Lock()

    def path(self, namespace: str, *parts: str | bytes) -> Path:
        """The file that holds (or would hold) the value for ``namespace`` and ``parts``."""
        h = hashlib.sha256(f"{_FORMAT}\0{namespace}".encode())
        for part in parts:
            raw = part.encode("utf-8", "surrogatepass") if isinstance(part, str) else part
            h.update(b"\0%d\0" % len(raw))
            h.update(raw)
        return self.root / f"{namespace}-{h.hexdigest()}.json"

    def get(self, namespace: str, *parts: str | bytes) -> Any | None:
        """The stored value, or None when there is none (or it cannot be read)."""
        try:
            with open(self.path(namespace, *parts), "rb") as f:
                raw = f.read(_MAX_ENTRY_BYTES + 1)
        except OSError:
            return None
        if len(raw) > _MAX_ENTRY_BYTES:
            return None
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            return None

    def put(self, namespace: str, value: Any, *parts: str | bytes) -> None:
        """Store ``value`` (JSON-serialisable) atomically; errors are ignored."""
        try:
            data = json.dumps(value, ensure_ascii=False, allow_nan=False).encode()
        except (TypeError, ValueError):
            return
        if len(data) > _MAX_ENTRY_BYTES:
            return
        dest = self.path(namespace, *parts)
        try:
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".json")
        except OSError:
            return
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, dest)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return
        self._prune_once()

    def _prune_once(self) -> None:
        """Keep the folder bounded: once per process, trim the oldest entries past the cap."""
        with self._lock:
            if self._pruned:
                return
            self._pruned = True
        try:
            entries = [e for e in os.scandir(self.root) if e.name.endswith(".json")]
            if len(entries) <= self.max_entries:
                return
            entries.sort(key=lambda e: e.stat().st_mtime_ns)
            for e in entries[: len(entries) - (self.max_entries * 3) // 4]:
                with contextlib.suppress(OSError):
                    os.unlink(e.path)
        except OSError:
            return


_memos: dict[Path, Memo] = {}
_unusable: set[Path] = set()
_memos_lock = threading.Lock()


def default_memo() -> Memo | None:
    """The memo under the cache directory, or None if it is turned off or unusable."""
    if os.environ.get(MEMO_ENV) == "1":
        return None
    root = default_cache_root() / "derived"
    with _memos_lock:
        memo = _memos.get(root)
        if memo is None and root not in _unusable:
            try:
                memo = _memos[root] = Memo(secure_dir(root))
            except (ConfigError, OSError):
                _unusable.add(root)
        return memo
