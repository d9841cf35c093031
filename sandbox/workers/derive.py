"""Schema derivation in a worker process: discovery never loads the Python runner in the kernel.

Deriving a Python skill's schemas imports its module in the runner (``describe-skill``). Done
in the kernel, the first derivation maps the compiled runner into the kernel's address space
(~270 MiB resident) for the life of the process. With ``[workers] isolation = "process"`` the
kernel runs discovery inside ``derivation_workers(policy)``: each memo miss is sent to one
worker of a private ``WorkerPool`` (its public ``run``) as a call of the internal runtime
``python-describe``, which the worker answers with ``describe_handler``. The worker has the same
OS limits as a call's, Landlock reading the packs being derived; the pool is closed when
discovery ends, so the kernel keeps no worker for it. Thread isolation derives in-process.

What the worker returns is the ``Described`` outcome as bounded JSON; the kernel checks the
schemas as before (``bastion.pyschema``), so a lying worker is no worse than a lying runner.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Final, final

from bastion.closing import Closeable
from bastion.errors import ErrorCode, ExecutionError
from bastion.executor import Capabilities, ExecutionRequest, Limits
from bastion.logs import get_logger

from ..cache import CacheMissError
from ..startwait import excluding
from .repair import repair

__all__ = [
    "DESCRIBE_RUNTIME",
    "WorkerDeriver",
    "active_deriver",
    "derivation_workers",
    "describe_handler",
    "installed_pack_folders",
]

DESCRIBE_RUNTIME: Final[str] = "python-describe"
"""The worker-internal runtime of a derivation call; no manifest can name it (``runtime`` is
one of wasm, component, python, native) and the kernel has no executor for it."""
_MAX_ANSWER: Final[int] = 2 << 20
_SLACK_S: Final[float] = 2.0
"""The pool's deadline is the describe deadline plus this: the worker's own deadline answers
first (a clear TIMEOUT), the pool's kill is the backstop."""
_PACK_MANIFEST: Final[str] = "bastion-pack.toml"
_log = get_logger("bastion.sandbox.workers.derive")
_active: contextvars.ContextVar[WorkerDeriver | None] = contextvars.ContextVar(
    "bastion_deriver", default=None
)


def active_deriver() -> WorkerDeriver | None:
    """The deriver of the discovery running in this context, or None (derive in-process)."""
    return _active.get()


def _pack_root(folder: Path) -> Path:
    """The pack folder holding ``folder`` (nearest parent with ``bastion-pack.toml``, at most
    four levels up, as ``shared_folder`` looks), else ``folder``: what the worker must read."""
    for parent in list(folder.parents)[:4]:
        if (parent / _PACK_MANIFEST).is_file():
            return parent
    return folder


def _covers(roots: Sequence[Path], path: Path) -> bool:
    return any(path == r or r in path.parents for r in roots)


def _audit_sink(skill: str) -> Any:
    def sink(event: str, fields: Mapping[str, Any]) -> None:
        # ``fields`` is the worker's (it may hold any key, ``event`` included): one value.
        _log.warning("derive.worker_event", skill=skill, worker_event=event, fields=dict(fields))

    return sink


@final
class WorkerDeriver(Closeable):
    """Runs ``describe`` for discovery in a one-worker pool, started on the first miss.

    Landlock fixes a worker's readable paths when it starts: the first worker reads every
    pack folder known in advance, and a skill outside all of them (a pack found some other
    way) starts a new worker that reads that one too."""

    def __init__(
        self,
        settings: Any,
        *,
        cache_root: Path,
        roots: Sequence[Path] = (),
        more_roots: Callable[[], list[Path]] | None = None,
    ) -> None:
        self._settings = replace(settings, count=1)
        self._cache_root = cache_root
        self._roots: list[Path] = [Path(r).resolve() for r in roots]
        self._more_roots = more_roots
        """Called once, before the first worker starts: pack folders it should read too."""
        self._pool: Any = None
        self.started = 0
        """Workers started for derivations (for tests and ``bench/``)."""

    def _pool_for(self, root: Path) -> Any:
        from .pool import WorkerPool

        if self._more_roots is not None:
            more, self._more_roots = self._more_roots, None
            self._roots += [r.resolve() for r in more() if not _covers(self._roots, r.resolve())]
        if self._pool is not None and not _covers(self._roots, root):
            self._pool.close()
            self._pool = None
        if not _covers(self._roots, root):
            self._roots.append(root)
        if self._pool is None:
            from bastion.sandbox.runner_build import restore_runner, runner_cached

            # The worker only loads: the runner must be built (a subprocess, which its seccomp
            # refuses) and compiled into the cache here, as ``ProcessExecutor.prepare`` does.
            if not runner_cached():
                restore_runner()
            read = tuple(sorted({*self._settings.read_paths, *map(str, self._roots)}))
            self._pool = WorkerPool(
                replace(self._settings, read_paths=read), cache_root=self._cache_root
            )
            self.started += 1
        return self._pool

    def describe(self, folder: Path, entry_rel: str, *, skill: str = "describe") -> Any:
        """``python_skill.describe`` run in the worker; the same ``Described`` comes back."""
        from ..python_skill import DESCRIBE_MEMORY_MB, DESCRIBE_TIMEOUT_MS, Described

        folder = Path(folder).resolve()
        pool = self._pool_for(_pack_root(folder))
        request = ExecutionRequest(
            skill=skill,
            version="0",
            runtime=DESCRIBE_RUNTIME,
            entry=folder / entry_rel,
            folder=folder,
            input=None,
            input_json=json.dumps({"entry": entry_rel}),
            caps=Capabilities(),
            limits=Limits(
                timeout_ms=DESCRIBE_TIMEOUT_MS, memory_mb=DESCRIBE_MEMORY_MB, output_kb=1024
            ),
            deadline=time.monotonic() + DESCRIBE_TIMEOUT_MS / 1000 + _SLACK_S,
            invocation_id="describe",
            logger=_log.bind(skill=skill, phase="describe"),
            audit=_audit_sink(skill),
        )
        try:
            try:
                raw = pool.run(request)
            except CacheMissError as miss:  # damaged since: repaired once, as for calls
                since = time.monotonic()
                repair(pool, "python", request.entry, miss)
                raw = pool.run(excluding(request, since))  # the repair is not the skill's time
        except ExecutionError as exc:
            return Described(None, exc)
        return decode_described(raw)

    def close(self) -> None:
        """Stop the worker (discovery is over)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def installed_pack_folders() -> list[Path]:
    """The folders of the installed packs (entry points in group ``bastion`` naming a top-level
    package whose folder holds ``bastion-pack.toml``), found without importing anything."""
    import importlib.metadata
    import importlib.util

    out: list[Path] = []
    for ep in importlib.metadata.entry_points(group="bastion"):
        if not ep.value.isidentifier():
            continue  # a dotted name may import its parent: discovery reports those
        try:
            spec = importlib.util.find_spec(ep.value)
        except Exception:
            continue
        for loc in (spec.submodule_search_locations or []) if spec else []:
            if (Path(loc) / _PACK_MANIFEST).is_file():
                out.append(Path(loc))
    return out


@contextlib.contextmanager
def derivation_workers(
    policy: Any, *, roots: Sequence[Path | str] = (), entry_points: bool = True
) -> Iterator[WorkerDeriver]:
    """Within this block, derivations run in a worker (see the module doc); ``roots`` are
    pack folders known in advance (``--pack`` paths) and, with ``entry_points``, the installed
    packs' folders: the first worker reads them all, so one worker serves the whole discovery."""
    from bastion.cachedir import default_cache_root

    from . import settings_from_policy

    deriver = WorkerDeriver(
        settings_from_policy(policy),
        cache_root=default_cache_root(),
        roots=[Path(r) for r in roots],
        more_roots=installed_pack_folders if entry_points else None,
    )
    token = _active.set(deriver)
    try:
        yield deriver
    finally:
        _active.reset(token)
        deriver.close()


# -- the two ends of the wire ----------------------------------------------------------------


def encode_described(described: Any) -> bytes:
    """A ``Described`` as JSON bytes (the worker's answer)."""
    err = described.error
    return json.dumps(
        {
            "data": described.data,
            "error": None
            if err is None
            else {"code": str(err.error_code), "message": err.message, "detail": err.detail},
            "fix": described.fix,
            "param": described.param,
        }
    ).encode()


def decode_described(raw: bytes) -> Any:
    """The ``Described`` a worker answered; anything malformed is an ``INTERNAL`` error."""
    from bastion.jsonsafe import loads_bounded

    from ..python_skill import Described

    bad = Described(
        None, ExecutionError(ErrorCode.INTERNAL, "the derivation worker's answer is malformed")
    )
    try:
        doc = loads_bounded(raw.decode("utf-8"), max_bytes=_MAX_ANSWER, max_depth=64)
    except (ExecutionError, UnicodeDecodeError):
        return bad
    if not isinstance(doc, dict):
        return bad
    data, err, fix, param = doc.get("data"), doc.get("error"), doc.get("fix"), doc.get("param")
    if isinstance(data, dict):
        return Described(data)
    if not isinstance(err, dict):
        return bad
    try:
        code = ErrorCode(str(err.get("code")))
    except ValueError:
        code = ErrorCode.INTERNAL
    detail = err.get("detail")
    return Described(
        None,
        ExecutionError(
            code,
            str(err.get("message") or "the derivation failed")[:4000],
            detail=str(detail)[:16000] if detail is not None else None,
        ),
        fix=str(fix)[:500] if isinstance(fix, str) else None,
        param=str(param)[:100] if isinstance(param, str) else None,
    )


def describe_handler(request: ExecutionRequest) -> bytes:
    """The worker's side of a ``python-describe`` call: derive in this (limited) process."""
    from ..python_skill import describe

    args = json.loads(request.input_json)
    entry = args.get("entry") if isinstance(args, dict) else None
    if not isinstance(entry, str):
        raise ExecutionError(ErrorCode.INTERNAL, "a describe call names no entry")
    return encode_described(describe(request.folder, entry, skill=request.skill))
