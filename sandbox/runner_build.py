"""Build the generic Python runner component from ``sandbox/guest/`` and cache it.

No built binary ships with Bastion: the runner is built with componentize-py (offline, in a
subprocess) the first time it is needed, into the private compile-cache directory, under a name
keyed by a hash of every file in ``sandbox/guest/`` and the componentize-py version. A file lock
makes concurrent processes build it once; the result is renamed into place atomically. The
compiled form then goes through the verified compile cache (``cache.py``).

componentize-py runs build-time Python with *writable* host folders, so it only ever sees a
private copy of ``sandbox/guest/`` (Bastion's own code), never a skill's source.
"""

from __future__ import annotations

import ast
import atexit
import contextlib
import fcntl
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

from bastion.cachedir import secure_dir
from bastion.errors import BastionError
from bastion.logs import get_logger

from .cache import CacheMissError, default_cache
from .cachekey import installed_version
from .startwait import WAIT_ENV, StartWait

if TYPE_CHECKING:
    import wasmtime.component

__all__ = [
    "GUEST_DIR",
    "RUNNER_APP",
    "RUNNER_WAIT_ENV",
    "RUNNER_WORLD",
    "RunnerBuildError",
    "allowed_modules",
    "built_runner",
    "ensure_runner",
    "load_runner",
    "load_runner_ready",
    "restore_runner",
    "runner_digest",
    "runner_sha256",
]

GUEST_DIR: Final[Path] = Path(__file__).resolve().parent / "guest"
"""Sources of the runner: ``wit/`` (the WIT package) and ``runner/`` (guest Python)."""
RUNNER_WORLD: Final[str] = "python-runner"
RUNNER_APP: Final[str] = "bastion_runner"
BUILD_TIMEOUT_S: Final[float] = 600.0
_FORMAT: Final[str] = "runner-v1"
_SKIP_DIRS: Final[frozenset[str]] = frozenset({"__pycache__", ".mypy_cache", ".ruff_cache"})

_log = get_logger("bastion.sandbox.runner_build")
_lock = threading.Lock()
Progress = Callable[[str], None]


class RunnerBuildError(BastionError):
    """The Python runner component could not be built (componentize-py failed or is missing)."""

    code = "RUNNER_BUILD_FAILED"


def _guest_files(root: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        files += [Path(dirpath) / f for f in filenames if not f.endswith((".pyc", ".pyo"))]
    return sorted(files)


def runner_digest(guest_dir: Path = GUEST_DIR) -> str:
    """sha256 of every guest file (path and content) and the componentize-py version."""
    h = hashlib.sha256(
        f"{_FORMAT}\0componentize-py={installed_version('componentize_py')}\0"
        f"{_tzdata_version()}\0".encode()
    )
    for path in _guest_files(guest_dir):
        rel = path.relative_to(guest_dir).as_posix()
        h.update(f"{rel}\0{path.stat().st_size}\0".encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _tzdata_dir() -> Path | None:
    """The zone files of the host's ``tzdata`` package (found, never imported), or None."""
    spec = importlib.util.find_spec("tzdata")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        if (Path(loc) / "zoneinfo").is_dir():
            return Path(loc) / "zoneinfo"
    return None


def _tzdata_version() -> str:
    try:
        return f"tzdata={installed_version('tzdata')}"
    except ModuleNotFoundError:  # importlib.metadata's PackageNotFoundError: not installed
        return "tzdata=none"


def _copy_tzdata(runner_src: Path) -> None:
    """Copy tzdata's zone files beside the guest's ``bastion_tz`` (read at build time)."""
    zones = _tzdata_dir()
    if zones is None:
        _log.warning("runner.no_tzdata", fix="pip install tzdata")
        return
    shutil.copytree(
        zones, runner_src / "tzdata" / "zoneinfo", ignore=shutil.ignore_patterns("*.py*")
    )


def allowed_modules(guest_dir: Path = GUEST_DIR) -> tuple[str, ...]:
    """The modules a Python skill may import (read as data from ``bastion_allowed.py``)."""
    tree = ast.parse((guest_dir / "runner" / "bastion_allowed.py").read_text("utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "ALLOWED_MODULES" for t in node.targets
        ):
            value = ast.literal_eval(node.value)
            return tuple(str(v) for v in value)
    raise RunnerBuildError("bastion_allowed.py defines no ALLOWED_MODULES")


def _runner_dir() -> Path:
    cache = default_cache()
    if cache.load_only:  # a worker only looks (the kernel builds and repairs)
        return cache.root / "runner"
    path = secure_dir(cache.root) / "runner"  # re-created if deleted meanwhile
    path.mkdir(mode=0o700, exist_ok=True)
    return path


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _componentize_cmd(src: Path, out: Path) -> list[str]:
    launcher = (
        "import sys; from componentize_py import script; "
        "sys.argv[0] = 'componentize-py'; sys.exit(script())"
    )
    return [
        sys.executable,
        "-c",
        launcher,
        "-q",
        "-d",
        str(src / "wit"),
        "-w",
        RUNNER_WORLD,
        "componentize",
        "-p",
        str(src / "runner"),
        RUNNER_APP,
        "-o",
        str(out),
    ]


def _build(dest: Path, progress: Progress | None) -> None:
    if progress is not None:
        progress("building the Python runner component with componentize-py (once)")
    started = time.monotonic()
    import tempfile  # here: workers never write (~3 ms of their start)

    with tempfile.TemporaryDirectory(prefix=".build-", dir=dest.parent) as tmp:
        work = Path(tmp)
        src = work / "guest"
        shutil.copytree(GUEST_DIR, src, ignore=shutil.ignore_patterns(*_SKIP_DIRS, "*.pyc"))
        _copy_tzdata(src / "runner")
        out = work / "runner.wasm"
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        try:
            proc = subprocess.run(
                _componentize_cmd(src, out),
                cwd=work,
                env=env,
                capture_output=True,
                timeout=BUILD_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RunnerBuildError(f"componentize-py could not run: {exc}") from exc
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip()[-2000:]
            raise RunnerBuildError(
                f"componentize-py failed with status {proc.returncode} building the Python "
                f"runner: {tail}"
            )
        os.chmod(out, 0o600)
        _write_digest(dest, hashlib.sha256(out.read_bytes()).hexdigest())
        os.replace(out, dest)
    _log.info(
        "runner.built",
        path=str(dest),
        seconds=round(time.monotonic() - started, 2),
        size=dest.stat().st_size,
    )


def _prune(folder: Path, keep: Path) -> None:
    for old in [*folder.glob("runner-*.wasm"), *folder.glob("runner-*.wasm.sha256")]:
        if old not in (keep, _digest_path(keep)):
            with contextlib.suppress(OSError):
                old.unlink()


def built_runner() -> Path | None:
    """The runner ``.wasm`` for the current sources if it is already built, else None."""
    dest = _runner_dir() / f"runner-{runner_digest()[:32]}.wasm"
    return dest if dest.is_file() else None


def runner_cached() -> bool:
    """Whether the runner for the current sources is built and its compiled form is in the
    compile cache, so a worker can load it without this process compiling or loading it.

    Once True (or once the runner is loaded here) it stays True for the process, as a loaded
    runner stays loaded: the disk is not looked at again, and later damage is a worker's cache
    miss, which the kernel repairs (``workers/repair.py``)."""
    if _ready or _staged:
        return True
    path = built_runner()
    if path is None or not default_cache().has_entry("component", runner_sha256(path)):
        return False
    _staged.append(path)
    return True


def ensure_runner(progress: Progress | None = None) -> Path:
    """Path of the built runner ``.wasm`` for the current sources, building it if needed.

    Thread- and process-safe; ``progress`` receives a message before a slow build.
    """
    digest = runner_digest()
    folder = _runner_dir()
    dest = folder / f"runner-{digest[:32]}.wasm"
    if dest.is_file():  # same name as built_runner()
        return dest
    if default_cache().load_only:
        raise CacheMissError("runner", digest, "the Python runner is not built")
    with _lock, _file_lock(folder / ".lock"):
        if not dest.is_file():
            _build(dest, progress)
            _prune(folder, dest)
    return dest


def _digest_path(runner: Path) -> Path:
    return runner.with_name(runner.name + ".sha256")


def _write_digest(runner: Path, digest: str) -> None:
    tmp = runner.with_name(f".{runner.name}.sha256.{os.getpid()}")
    tmp.write_text(digest, encoding="ascii")
    os.replace(tmp, _digest_path(runner))


def runner_sha256(runner: Path) -> str:
    """sha256 of the built runner ``.wasm``, recorded beside it at build time.

    Reading the record instead of hashing ~20 MB saves ~25 ms per process. A missing or
    malformed record (a runner built by an older Bastion) is recomputed and written.
    """
    with contextlib.suppress(OSError, UnicodeDecodeError):
        text = _digest_path(runner).read_text(encoding="ascii").strip()
        if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
            return text
    digest = hashlib.sha256(runner.read_bytes()).hexdigest()
    with contextlib.suppress(OSError):
        _write_digest(runner, digest)
    return digest


def runner_artifact() -> Path | None:
    """The compiled runner's file in the cache (the file its memory image is mapped from), or
    None if it is not built or not compiled."""
    path = built_runner()
    if path is None:
        return None
    cache = default_cache()
    art = cache.artifact_path(cache.key_for_digest("component", runner_sha256(path)))
    return art if art.is_file() else None


def load_runner(progress: Progress | None = None) -> wasmtime.component.Component:
    """The compiled runner component (built and compiled once, then served from the caches).

    A runner file that does not compile (truncated or corrupted on disk) is deleted and built
    again, once."""
    import wasmtime  # here: a kernel that only checks the cache (``runner_cached``) needs none

    path = ensure_runner(progress)
    try:
        return default_cache().component_from_file(
            path, sha256=runner_sha256(path), progress=progress
        )
    except wasmtime.WasmtimeError as exc:
        if default_cache().load_only:
            raise CacheMissError("runner", path.name, f"does not compile: {exc}") from None
        _log.warning("runner.corrupt_rebuilt", path=str(path), reason=str(exc)[:200])
        for p in (path, _digest_path(path)):
            with contextlib.suppress(OSError):
                p.unlink()
        path = ensure_runner(progress)
        return default_cache().component_from_file(
            path, sha256=runner_sha256(path), progress=progress
        )


RUNNER_WAIT_ENV: Final[str] = WAIT_ENV
"""Seconds a call waits for the runner to be built and compiled (default 300) before it is
answered ``NOT_READY``; the build goes on, and a later call finds the runner ready. The same
wait bounds every start-up step (``startwait.py``)."""

_waits: StartWait[wasmtime.component.Component] = StartWait("bastion-runner-warmup")
_staged: list[Path] = []
"""The runner found compiled in the cache by ``runner_cached`` (once)."""
_ready: list[wasmtime.component.Component] = []
"""The loaded runner, once (a list so the module needs no ``global``)."""


def _load_and_keep(progress: Progress | None) -> wasmtime.component.Component:
    runner = load_runner(progress)
    if not _ready:  # as engine._release: dropped at exit, before wasmtime's modules go
        atexit.register(_ready.clear)
    _ready[:] = [runner]
    return runner


def load_runner_ready(
    progress: Progress | None = None, wait_s: float | None = None
) -> wasmtime.component.Component:
    """``load_runner`` with a bounded start-up wait: the build runs once in the background; a
    caller waits at most ``wait_s`` (default ``$BASTION_RUNNER_WAIT_S`` or 300 s), then gets
    ``ExecutionError(NOT_READY)`` (retryable). A failed build is retried by the next caller."""
    if _ready:
        return _ready[0]
    return _waits.run(
        "runner",
        lambda: _load_and_keep(progress),
        what="building and compiling the Python runner",
        wait=wait_s,
    )


def restore_runner(progress: Progress | None = None) -> bool:
    """Put a verified runner back on disk for workers, whatever this process holds in memory:
    the runner is rebuilt if its file is gone (or no longer matches its recorded digest), and
    its compiled form re-serialized or compiled. True if anything was written."""
    import wasmtime

    path = ensure_runner(progress)
    try:
        return default_cache().restore(
            "component", path, sha256=runner_sha256(path), progress=progress
        )
    except (ValueError, wasmtime.WasmtimeError) as exc:
        _log.warning("runner.corrupt_rebuilt", path=str(path), reason=str(exc)[:200])
        for p in (path, _digest_path(path)):
            with contextlib.suppress(OSError):
                p.unlink()
        path = ensure_runner(progress)
        default_cache().restore("component", path, sha256=runner_sha256(path), progress=progress)
        return True
