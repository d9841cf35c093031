"""A bounded LRU cache of results of deterministic skills, with a time to live.

Keys are tenant + skill + version + the sha256 of the canonical arguments, so one tenant never
sees another's results. Values are stored as JSON text and parsed on each hit, so callers can
never alter what is cached. Thread-safe; ``clock`` is injectable so tests never sleep.

With a shared state store the entries live there (``SET ... PX ttl``; the store's memory
policy, not ``max_entries``, bounds them), so a result computed on one replica is a hit on the
others; while the store is down the cache is skipped (a miss, nothing stored), never an error.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, final

if TYPE_CHECKING:
    from .state.handle import StateHandle

__all__ = ["CacheKey", "ResultCache"]

CacheKey = tuple[str, str, str, str]
"""(tenant, skill, version, args_sha256)."""

_MISS: Any = object()


@final
class ResultCache:
    """LRU of at most ``max_entries`` JSON values, each valid for ``ttl_s`` seconds."""

    def __init__(
        self,
        ttl_s: float,
        max_entries: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        state: StateHandle | None = None,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s!r}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries!r}")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._data: OrderedDict[CacheKey, tuple[float, str]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self._store = state.store if state is not None else None
        self.skipped = 0
        """Lookups and stores skipped because the shared store was down."""

    @staticmethod
    def key(tenant: str, skill: str, version: str, args_sha256: str) -> CacheKey:
        return (tenant, skill, version, args_sha256)

    def get(self, key: CacheKey) -> Any:
        """The cached value, or ``ResultCache.MISS``."""
        if self._store is not None:
            return self._get_shared(key)
        now = self._clock()
        with self._lock:
            item = self._data.get(key)
            if item is None or item[0] <= now:
                if item is not None:
                    del self._data[key]
                self.misses += 1
                return _MISS
            self._data.move_to_end(key)
            self.hits += 1
            text = item[1]
        return json.loads(text)

    def put(self, key: CacheKey, value: Any) -> None:
        """Store a JSON value (evicting the least recently used entry when full)."""
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        if self._store is not None:
            self._put_shared(key, text)
            return
        expires = self._clock() + self.ttl_s
        with self._lock:
            self._data[key] = (expires, text)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def _shared_key(self, key: CacheKey) -> str:
        assert self._store is not None
        tenant, skill, version, digest = key
        return self._store.tenant_key(tenant, "cache", skill, version, digest)

    def _get_shared(self, key: CacheKey) -> Any:
        from .state.unavailable import StoreUnavailable

        assert self._store is not None
        try:
            text = self._store.get(self._shared_key(key))
        except StoreUnavailable:
            text = None
            with self._lock:
                self.skipped += 1
        with self._lock:
            if text is None:
                self.misses += 1
                return _MISS
            self.hits += 1
        return json.loads(text)

    def _put_shared(self, key: CacheKey, text: str) -> None:
        from .state.unavailable import StoreUnavailable

        assert self._store is not None
        try:
            self._store.put(self._shared_key(key), text, self.ttl_s)
        except StoreUnavailable:
            with self._lock:
                self.skipped += 1

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    MISS: Any = _MISS
