"""The compile cache: compiled modules and components, on disk and in memory.

A serialized module is native code that ``deserialize_file`` maps and runs with **no integrity
check**, so the cache is treated as a trust boundary:

- the directory is private (mode 0700, owned by this user); a group/world-writable one or one
  owned by someone else is refused (``CacheDirError``); a deleted one is re-created on write;
- every artifact ``<key>.cwasm`` has its digest in ``<key>.sha256`` (the sha256 of the sha256 of
  each 4 MiB, so the chunks hash on several threads); the digest is verified on the very inode
  that is then loaded (through ``/proc/self/fd``), and a mismatching, truncated or unloadable
  entry is deleted and recompiled, never loaded;
- files are written under temporary names and atomically renamed (safe between processes);
- a worker process opens its cache ``load_only`` (``use_load_only()``): it never compiles or
  writes, and a missing or bad entry is a ``CacheMissError`` that the kernel repairs with
  ``restore()`` (docs/sandbox.md, "Caches under faults").

The key is sha256(kind + wasm sha256 + ``engine_fingerprint()``). Loaded objects are memoized in
memory by key (and by path + mtime + size for ``*_from_file``) so repeated calls skip the disk.
A miss (a disk load or a compile) runs under a bounded start-up wait (``startwait.py``).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar

from bastion.cachedir import CACHE_ENV, CacheDirError, check_dir, default_cache_root, secure_dir
from bastion.closing import Closeable
from bastion.logs import get_logger

from .cachekey import CacheMissError, Kind, cache_key
from .engine import engine_fingerprint, get_engine
from .startwait import StartWait

if TYPE_CHECKING:
    import wasmtime
    import wasmtime.component

    _T = TypeVar("_T", wasmtime.Module, wasmtime.component.Component)
else:
    _T = TypeVar("_T")

__all__ = [
    "CACHE_ENV",
    "CacheDirError",
    "CacheMissError",
    "CompileCache",
    "default_cache",
    "tree_digest_bytes",
    "tree_digest_fd",
    "use_load_only",
]

_log = get_logger("bastion.sandbox.cache")
_PROC_FD: Final[Path] = Path("/proc/self/fd")

Progress = Callable[[str], None]

_CHUNK: Final[int] = 4 << 20
_TREE_PREFIX: Final[str] = "sha256-tree-4m:"
_HASH_THREADS: Final[int] = max(1, min(4, os.cpu_count() or 1))


def _sha256_file(fd: int) -> str:
    """Plain sha256 of the whole file (the format of entries written before the tree digest)."""
    h = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    while chunk := os.read(fd, 1 << 20):
        h.update(chunk)
    return h.hexdigest()


def _tree_digest(chunk_digests: list[bytes]) -> str:
    return _TREE_PREFIX + hashlib.sha256(b"".join(chunk_digests)).hexdigest()


def tree_digest_bytes(data: bytes | memoryview) -> str:
    """Digest of ``data`` as stored in ``<key>.sha256``: sha256 over the sha256 of each 4 MiB."""
    view = memoryview(data)
    return _tree_digest(
        [hashlib.sha256(view[o : o + _CHUNK]).digest() for o in range(0, len(view), _CHUNK)]
        or [hashlib.sha256(b"").digest()]
    )


def tree_digest_fd(fd: int) -> str:
    """``tree_digest_bytes`` of the file open as ``fd``, hashed on several threads.

    A compiled runner is ~40 MB; sha256 and ``pread`` release the GIL, so the chunks hash in
    parallel (about half the time on two cores) with the same result as the serial form.
    """
    size = os.fstat(fd).st_size
    offsets = list(range(0, size, _CHUNK)) or [0]
    digests: list[bytes] = [b""] * len(offsets)
    errors: list[OSError] = []

    def work(first: int) -> None:
        try:
            for i in range(first, len(offsets), _HASH_THREADS):
                digests[i] = hashlib.sha256(os.pread(fd, _CHUNK, offsets[i])).digest()
        except OSError as exc:
            errors.append(exc)

    if len(offsets) == 1 or _HASH_THREADS == 1:
        for first in range(_HASH_THREADS):
            work(first)
    else:
        threads = [
            threading.Thread(target=work, args=(i,), name="bastion-cache-hash")
            for i in range(1, _HASH_THREADS)
        ]
        for t in threads:
            t.start()
        work(0)
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return _tree_digest(digests)


class CompileCache(Closeable):
    """Compiles WASM modules and components once, caches them verified on disk and in memory.

    Thread-safe: concurrent requests for the same key compile once; different keys proceed in
    parallel.
    """

    def __init__(
        self,
        root: Path | None = None,
        *,
        progress: Progress | None = None,
        load_only: bool = False,
    ) -> None:
        root = root if root is not None else default_cache_root()
        self.root = root if load_only else secure_dir(root)
        self.load_only = load_only
        """Never compile or write: a miss is a ``CacheMissError`` (a worker's cache)."""
        self.progress = progress
        self._waits: StartWait[object] = StartWait("bastion-cache-load")
        self._memo: dict[str, object] = {}
        self._compiled: set[str] = set()
        """Keys whose memoized object this process compiled (not mapped from a cache file,
        which a fault may have truncated under it: touching such pages is a SIGBUS)."""
        self._path_memo: dict[tuple[str, int, int, int, int], object] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self.compiles = 0
        """Fresh compilations done by this cache (diagnostics and tests)."""
        self.disk_loads = 0
        """Entries loaded (verified) from disk."""

    @property
    def _engine(self) -> wasmtime.Engine:
        """The process's engine, created on the first compile or load, not with the cache: a
        kernel whose workers run the skills only looks entries up (no wasmtime import)."""
        return get_engine()

    # -- public API -------------------------------------------------------------------------

    def module(self, wasm: bytes, *, progress: Progress | None = None) -> wasmtime.Module:
        """The compiled ``Module`` for ``wasm`` (core module bytes or WAT text)."""
        import wasmtime

        return self._get("module", wasm, wasmtime.Module, progress)

    def component(
        self, wasm: bytes, *, progress: Progress | None = None
    ) -> wasmtime.component.Component:
        """The compiled ``Component`` for ``wasm`` (component bytes)."""
        import wasmtime.component

        return self._get("component", wasm, wasmtime.component.Component, progress)

    def module_from_file(self, path: Path, *, progress: Progress | None = None) -> wasmtime.Module:
        """``module()`` of a file's bytes, memoized by path, mtime and size."""
        import wasmtime

        return self._from_file("module", path, wasmtime.Module, progress)

    def component_from_file(
        self, path: Path, *, sha256: str | None = None, progress: Progress | None = None
    ) -> wasmtime.component.Component:
        """``component()`` of a file's bytes, memoized by path, mtime and size.

        ``sha256``, the file's digest when the caller already knows it (the runner records it at
        build time), spares reading and hashing a large file just to find its cache entry.
        """
        if sha256 is not None:
            return self._from_known_digest("component", path, sha256, progress)
        import wasmtime.component

        return self._from_file("component", path, wasmtime.component.Component, progress)

    def key(self, kind: Kind, wasm: bytes) -> str:
        """Cache key of ``wasm`` compiled as ``kind`` by this engine."""
        return self.key_for_digest(kind, hashlib.sha256(wasm).hexdigest())

    def key_for_digest(self, kind: Kind, wasm_sha256: str) -> str:
        """Cache key of the wasm whose sha256 is ``wasm_sha256``, compiled as ``kind``."""
        return cache_key(kind, wasm_sha256, engine_fingerprint())

    def artifact_path(self, key: str) -> Path:
        return self.root / f"{key}.cwasm"

    def digest_path(self, key: str) -> Path:
        return self.root / f"{key}.sha256"

    def has_entry(self, kind: Kind, wasm_sha256: str) -> bool:
        """Whether the wasm whose sha256 is ``wasm_sha256`` is compiled in memory or has an
        entry on disk (artifact and digest record). Not verified: whoever loads it verifies
        it, and a worker's bad entry is a ``CacheMissError`` that the kernel repairs."""
        key = self.key_for_digest(kind, wasm_sha256)
        if key in self._memo:
            return True
        return self.artifact_path(key).is_file() and self.digest_path(key).is_file()

    def clear_memory(self) -> None:
        """Forget in-memory objects (the disk cache stays)."""
        self._memo.clear()
        self._path_memo.clear()
        self._compiled.clear()

    def close(self) -> None:
        self.clear_memory()

    # -- internals --------------------------------------------------------------------------

    def _lock_for(self, key: str) -> threading.Lock:
        with self._locks_lock:
            lock = self._locks.get(key)
            if lock is None:
                lock = self._locks[key] = threading.Lock()
            return lock

    def _from_file(self, kind: Kind, path: Path, cls: type[_T], progress: Progress | None) -> _T:
        # One stat per call: the file's identity (device, inode) and version (mtime, size) key
        # the memo, so a replaced or edited file is reloaded without resolving the path again.
        st = os.stat(path)
        pkey = (kind, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        hit = self._path_memo.get(pkey)
        if hit is not None:
            return hit  # type: ignore[return-value]
        obj = self._get(kind, Path(path).read_bytes(), cls, progress)
        self._path_memo[pkey] = obj
        return obj

    def _from_known_digest(
        self, kind: Kind, path: Path, sha256: str, progress: Progress | None
    ) -> wasmtime.component.Component:
        import wasmtime.component

        cls = wasmtime.component.Component
        key = self.key_for_digest(kind, sha256)
        obj = self._cached(key, cls, None)
        if obj is not None:
            return obj
        if self.load_only:
            raise CacheMissError(kind, key, "no verified entry on disk")
        # Not compiled yet (or the entry was bad): compile from the file's bytes, keyed by what
        # they really hash to, so a stale digest can never attach code to the wrong key.
        return self._get(kind, Path(path).read_bytes(), cls, progress)

    def _get(self, kind: Kind, wasm: bytes, cls: type[_T], progress: Progress | None) -> _T:
        key = self.key(kind, wasm)
        if self.load_only:
            obj = self._cached(key, cls, None)
            if obj is None:
                raise CacheMissError(kind, key, "no verified entry on disk")
            return obj
        obj = self._cached(
            key, cls, lambda: self._compile(key, wasm, cls, progress or self.progress)
        )
        assert obj is not None  # compile() returns an object or raises
        return obj

    def _cached(self, key: str, cls: type[_T], compile: Callable[[], _T] | None) -> _T | None:
        """The object under ``key``: from memory, else verified from disk, else ``compile()``d
        (once, under the key's lock); None if it is nowhere and there is nothing to compile.
        A miss runs under the bounded start-up wait (``NOT_READY`` if it runs out)."""
        hit = self._memo.get(key)
        if hit is not None:
            return hit  # type: ignore[return-value]
        what = "loading a compiled module" if compile is None else "compiling a module"
        obj = self._waits.run(
            (key, compile is None), lambda: self._cached_slow(key, cls, compile), what=what
        )
        return obj  # type: ignore[return-value]

    def _cached_slow(self, key: str, cls: type[_T], compile: Callable[[], _T] | None) -> _T | None:
        with self._lock_for(key):
            hit = self._memo.get(key)
            if hit is not None:
                return hit  # type: ignore[return-value]
            obj = self._load(key, cls)
            if obj is None and compile is not None:
                obj = compile()
            if obj is not None:
                self._memo[key] = obj
            return obj

    def _load(self, key: str, cls: type[_T]) -> _T | None:
        art, dig = self.artifact_path(key), self.digest_path(key)
        if self.load_only:
            try:  # a worker never creates or fixes the folder, but refuses an unsafe one
                check_dir(self.root)
            except CacheDirError as exc:
                raise CacheMissError("entry", key, exc.message) from None
        try:
            expected = dig.read_text(encoding="ascii").strip()
            fd = os.open(art, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except (OSError, UnicodeDecodeError):
            return None
        try:
            # Entries written before the tree digest hold a plain sha256; they are verified that
            # way once and their record is rewritten.
            legacy = not expected.startswith(_TREE_PREFIX)
            actual = _sha256_file(fd) if legacy else tree_digest_fd(fd)
            if actual != expected:
                _log.warning("cache.entry_corrupt", key=key, reason="sha256 mismatch")
                self._evict(key)
                return None
            # Load the very inode whose digest was just checked (no swap between check and use).
            src = _PROC_FD / str(fd) if _PROC_FD.is_dir() else art
            import wasmtime

            try:
                obj = cls.deserialize_file(self._engine, str(src))
            except wasmtime.WasmtimeError as exc:
                _log.warning("cache.entry_unloadable", key=key, reason=str(exc)[:200])
                self._evict(key)
                return None
            if legacy:
                with contextlib.suppress(OSError):
                    self._write_atomic(dig, tree_digest_fd(fd).encode())
        finally:
            os.close(fd)
        self.disk_loads += 1
        return obj

    def _compile(self, key: str, wasm: bytes, cls: type[_T], progress: Progress | None) -> _T:
        if progress is not None:
            progress(f"compiling {cls.__name__.lower()} ({len(wasm) // 1024} KiB)")
        obj = cls(self._engine, wasm)
        self.compiles += 1
        self._compiled.add(key)
        try:
            self._store(key, obj)
        except OSError as exc:
            _log.warning("cache.write_failed", key=key, reason=exc.strerror)
        return obj

    def _store(self, key: str, obj: wasmtime.Module | wasmtime.component.Component) -> None:
        blob = bytes(obj.serialize())
        self._write_atomic(self.artifact_path(key), blob)
        self._write_atomic(self.digest_path(key), tree_digest_bytes(blob).encode())

    def _disk_ok(self, key: str) -> bool:
        """Whether ``key`` has an entry on disk that matches its recorded digest."""
        try:
            expected = self.digest_path(key).read_text(encoding="ascii").strip()
            fd = os.open(self.artifact_path(key), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except (OSError, UnicodeDecodeError):
            return False
        try:
            legacy = not expected.startswith(_TREE_PREFIX)
            return (_sha256_file(fd) if legacy else tree_digest_fd(fd)) == expected
        except OSError:
            return False
        finally:
            os.close(fd)

    def restore(
        self, kind: Kind, path: Path, *, sha256: str | None = None, progress: Progress | None = None
    ) -> bool:
        """Make the disk hold a verified entry for the file at ``path`` compiled as ``kind``,
        whatever the in-memory memo holds (a worker loads only from disk): the folder is
        re-created (or refused, ``CacheDirError``), the object re-serialized if this process
        compiled it, else the file compiled (a loaded one is mapped from a file that may be
        the damaged one). ``sha256``, the file's recorded digest, names the entry; a
        file that no longer hashes to it raises ``ValueError``. True if an entry was written;
        a write that fails raises ``OSError``."""
        secure_dir(self.root)
        data: bytes | None = None
        if sha256 is None:
            data = Path(path).read_bytes()
            sha256 = hashlib.sha256(data).hexdigest()
        key = self.key_for_digest(kind, sha256)
        import wasmtime.component

        cls: type[wasmtime.Module] | type[wasmtime.component.Component] = (
            wasmtime.Module if kind == "module" else wasmtime.component.Component
        )
        with self._lock_for(key):
            if self._disk_ok(key):
                return False
            self._evict(key)
            obj = self._memo.get(key) if key in self._compiled else None
            if obj is None:
                data = Path(path).read_bytes() if data is None else data
                if hashlib.sha256(data).hexdigest() != sha256:
                    raise ValueError(f"{Path(path).name!r} no longer has its recorded sha256")
                if progress is not None:
                    progress(f"compiling {cls.__name__.lower()} ({len(data) // 1024} KiB)")
                obj = cls(self._engine, data)
                self.compiles += 1
                self._compiled.add(key)
            self._store(key, obj)  # type: ignore[arg-type]
            self._memo[key] = obj
        _log.info("cache.restored", key=key, kind=kind)
        return True

    def _write_atomic(self, dest: Path, data: bytes) -> None:
        secure_dir(self.root)  # re-created if it was deleted while the process ran
        import tempfile  # here: workers never write (~3 ms of their start)

        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=dest.suffix)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _evict(self, key: str) -> None:
        if self.load_only:
            return  # a worker may not write the cache; the kernel's restore() replaces it
        for p in (self.artifact_path(key), self.digest_path(key)):
            with contextlib.suppress(OSError):
                p.unlink()


_default: CompileCache | None = None
_default_lock = threading.Lock()
_load_only = False


def use_load_only() -> None:
    """Make this process's default cache load-only (a worker, before it first uses it)."""
    global _load_only
    with _default_lock:
        _load_only = True
        if _default is not None:
            _default.load_only = True


def default_cache() -> CompileCache:
    """The process-wide cache at the default location (``BASTION_CACHE_DIR`` honoured)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = CompileCache(load_only=_load_only)
            atexit.register(_default.clear_memory)  # as engine._release: before wasmtime goes
        return _default
