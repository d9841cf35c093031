"""What the Python runner is given for a skill: its folder, mapped read-only, and the call.

A Python skill is a folder (``skill.toml``, its entry module, sibling modules or packages, and
``_vendor/`` for locked dependencies). The host maps that folder read-only at
``GUEST_SKILL_ROOT`` and names the entry; the runner imports it there. Nothing of the skill is
imported, compiled or run on the host. The vendor lock is verified before every mapping.

``describe`` runs the runner's ``describe-skill`` export in a store with no grants (no mounts
but the skill folder, no network, no secrets), a short deadline and a memory cap: it is how
discovery derives a skill's schemas from its real type hints.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from wasmtime.component import Component

from bastion.errors import ErrorCode, ExecutionError
from bastion.executor import Capabilities, ExecutionRequest, Limits, Mount
from bastion.logs import get_logger

from .component_call import call_export
from .component_exec import outcome_text
from .packshared import SHARED_DIR, shared_folder
from .runner_build import Progress, load_runner
from .store import Sandbox

__all__ = [
    "CALL_SKILL_EXPORT",
    "DESCRIBE_EXPORT",
    "DESCRIBE_MEMORY_MB",
    "DESCRIBE_TIMEOUT_MS",
    "GUEST_SHARED_ROOT",
    "GUEST_SKILL_ROOT",
    "MODULES_EXPORT",
    "SHARED_DIR",
    "Described",
    "call_args",
    "describe",
    "folder_call",
    "runner_modules",
    "shared_folder",
    "skill_mounts",
]

GUEST_SKILL_ROOT: Final[str] = "/_bastion/skill"
"""Where the skill's folder appears in the guest (read-only); no grant may use this path."""
GUEST_SHARED_ROOT: Final[str] = "/_bastion/shared"
"""Where the pack's ``_shared/`` folder appears in the guest (read-only), if it has one."""
CALL_SKILL_EXPORT: Final[str] = "call-skill"
DESCRIBE_EXPORT: Final[str] = "describe-skill"
MODULES_EXPORT: Final[str] = "list-modules"
DESCRIBE_TIMEOUT_MS: Final[int] = 3000
"""Deadline for importing a skill's module to derive its schemas (its top level must be quick)."""
DESCRIBE_MEMORY_MB: Final[int] = 128
"""Memory cap while deriving schemas."""
_RESERVED: Final[str] = "/_bastion"
_MAX_DESCRIBE_BYTES: Final[int] = 1 << 20
_log = get_logger("bastion.sandbox.python_skill")


def skill_mounts(folder: Path, granted: Sequence[Mount]) -> tuple[Mount, ...]:
    """The skill folder and the pack's ``_shared/`` (read-only), then the granted mounts; a
    grant on the reserved ``/_bastion`` path is refused (it would hide or replace code)."""
    for m in granted:
        if m.guest == _RESERVED or m.guest.startswith(_RESERVED + "/"):
            raise ExecutionError(
                ErrorCode.FS_DENIED,
                f"mount {m.guest!r} uses the reserved guest path {_RESERVED!r}; choose another",
            )
    own = [Mount(GUEST_SKILL_ROOT, folder, writable=False)]
    shared = shared_folder(folder)
    if shared is not None:
        own.append(Mount(GUEST_SHARED_ROOT, shared, writable=False))
    return (*own, *granted)


def folder_call(request: ExecutionRequest) -> tuple[str, tuple[Mount, ...]]:
    """The entry (relative to the skill folder) and the mounts of one call, after the vendor
    lock is verified; any problem is an ``ExecutionError`` naming it."""
    from bastion.errors import ManifestError
    from bastion.vendorlock import verify_vendor

    folder = request.folder
    try:
        entry_rel = request.entry.relative_to(folder).as_posix()
    except ValueError:
        raise ExecutionError(
            ErrorCode.NOT_FOUND, f"entry {request.entry.name!r} is not inside the skill folder"
        ) from None
    try:
        verify_vendor(folder, None)
    except ManifestError as exc:
        raise ExecutionError(
            ErrorCode.SKILL_ERROR, f"the skill's vendored files were refused: {exc.message}"
        ) from None
    return entry_rel, skill_mounts(folder, request.caps.mounts)


def call_args(
    request: ExecutionRequest, entry_rel: str, code: Mapping[str, str] | None = None
) -> tuple[str, str, str]:
    """The ``call-skill`` arguments: entry (relative to the folder), input JSON, context JSON
    (the skill's ``config``, and ``code``: the entry's compiled code from ``pycode``, if any)."""
    config: Mapping[str, Any] = getattr(request.caps, "config", None) or {}
    ctx: dict[str, Any] = {"config": dict(config)}
    if code:
        ctx["code"] = dict(code)
    context = json.dumps(ctx, ensure_ascii=False, allow_nan=False)
    return entry_rel, request.input_json, context


@dataclass(frozen=True, slots=True)
class Described:
    """What the runner derived, or why it could not (``error`` with ``code`` and ``fix``)."""

    data: dict[str, Any] | None
    error: ExecutionError | None = None
    fix: str | None = None
    param: str | None = None


def _quiet(kind: str, fields: Mapping[str, Any]) -> None:
    """Audit sink of a describe call: there is no invocation to audit."""


def describe(
    folder: Path,
    entry_rel: str,
    *,
    skill: str = "describe",
    timeout_ms: int = DESCRIBE_TIMEOUT_MS,
    memory_mb: int = DESCRIBE_MEMORY_MB,
    progress: Progress | None = None,
) -> Described:
    """Import the skill in a no-grant sandbox and derive its schemas (never raises for the
    skill's faults: they come back as ``Described.error``)."""
    runner = load_runner(progress)
    limits = Limits(timeout_ms=timeout_ms, memory_mb=memory_mb, output_kb=1024)
    deadline = time.monotonic() + timeout_ms / 1000
    request = ExecutionRequest(
        skill=skill,
        version="0",
        runtime="python",
        entry=folder / entry_rel,
        folder=folder,
        input=None,
        input_json="{}",
        caps=Capabilities(),
        limits=limits,
        deadline=deadline,
        invocation_id="describe",
        logger=_log.bind(skill=skill, phase="describe"),
        audit=_quiet,
    )
    try:
        with Sandbox(
            skill=skill,
            stdin=b"",
            limits=limits,
            deadline=deadline,
            mounts=skill_mounts(folder, ()),
            request=request,
        ) as sandbox:
            outcome = call_export(sandbox, runner, DESCRIBE_EXPORT, entry_rel)
            ok, text = outcome_text(outcome, sandbox)
    except ExecutionError as exc:
        return Described(None, exc)
    if not ok:
        from .python_exec import runner_error

        err = runner_error(text)
        info = _json_object(text) or {}
        if info.get("code") == "SCHEMA":
            err = ExecutionError(ErrorCode.SKILL_ERROR, str(info.get("message") or "")[:2000])
        fix = info.get("fix")
        param = info.get("param")
        return Described(
            None,
            err,
            fix=str(fix)[:500] if isinstance(fix, str) else None,
            param=str(param)[:100] if isinstance(param, str) else None,
        )
    data = _json_object(text)
    if data is None:
        return Described(
            None, ExecutionError(ErrorCode.INVALID_OUTPUT, "the runner's description is not JSON")
        )
    return Described(data)


def _json_object(text: str) -> dict[str, Any] | None:
    if len(text) > _MAX_DESCRIBE_BYTES:
        return None
    from bastion.jsonsafe import loads_bounded

    try:
        data = loads_bounded(text, max_bytes=_MAX_DESCRIBE_BYTES, max_depth=48)
    except ExecutionError:
        return None
    return data if isinstance(data, dict) else None


def runner_modules(progress: Progress | None = None) -> list[str]:
    """The modules a skill may import, as the built runner reports them (``list-modules``)."""
    runner: Component = load_runner(progress)
    limits = Limits(timeout_ms=5000, memory_mb=DESCRIBE_MEMORY_MB, output_kb=256)
    with Sandbox(
        skill="modules", stdin=b"", limits=limits, deadline=time.monotonic() + 5.0
    ) as sandbox:
        outcome = call_export(sandbox, runner, MODULES_EXPORT)
    value = outcome.value
    if outcome.fault is not None or not isinstance(value, str):
        raise ExecutionError(ErrorCode.INTERNAL, "the runner did not list its modules")
    names = json.loads(value)
    return [str(n) for n in names] if isinstance(names, list) else []
