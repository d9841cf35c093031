"""A Python skill's schemas and description, derived inside the sandbox from its real hints.

The host never imports, parses or runs a skill's Python. At discovery the Python runner imports
the skill's module in a store with no grants (no network, no secrets, no mounts but the skill's
own folder, read-only), a short deadline and a memory cap, and derives the input and output
JSON Schemas and the description from ``run``'s signature (``typing.get_type_hints``) and
docstring. The same runner converts arguments to those types at call time, so schema and
conversion cannot disagree, and there is no host/guest Python version mismatch.

Results are remembered in the memo (``bastion.memo``) under the sha256 of every ``.py`` file
of the skill folder (vendored ones included), the entry name and the runner's digest. What the
runner returns is untrusted data: it is size-bounded, and each schema passes the same metaschema
check as a TOML schema. A failure is a ``ManifestError`` that names the reason (a type hint the
runner cannot describe, a top level that runs past the deadline or allocates too much); the
skill's failures are remembered too, under the same key, so a module whose top level loops
costs its deadline once, not at every discovery. A remembered timeout or crash expires after
``FAILURE_TIMEOUT_TTL_S`` (a loaded machine may time out a module that is merely slow to import);
the host's own faults (no runner) are never remembered.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .cachedir import CacheDirError
from .errors import ErrorCode, ManifestError
from .manifest import SKILL_MANIFEST, SkillManifest, check_json_schema
from .memo import default_memo
from .vendorlock import LOCK_FILE, verify_vendor

__all__ = [
    "FAILURE_TIMEOUT_TTL_S",
    "MAX_MODULE_BYTES",
    "DerivedSkill",
    "derive_schema_memoized",
    "skill_digest",
]

_MEMO_NAMESPACE: Final = "pyschema-guest"
FAILURE_TIMEOUT_TTL_S: Final[float] = 3600.0
"""How long a remembered derivation *timeout* stands before the module is imported again."""
_MAX_FILES: Final[int] = 20_000
_MAX_BYTES: Final[int] = 256 << 20
MAX_MODULE_BYTES: Final[int] = 4 * 1024 * 1024
"""Largest ``.py`` file of a skill: the guest loader's own limit (``bastion_loader.py``),
checked on the host by ``stat`` first, so a huge file is refused before anything reads it."""
_CHUNK: Final[int] = 1 << 20
_HOST_FAULTS: Final = frozenset({ErrorCode.INTERNAL, ErrorCode.CANCELLED, ErrorCode.NOT_READY})
"""Describe outcomes that are the host's fault, never remembered against the skill."""
_EXPIRING: Final = frozenset({ErrorCode.TIMEOUT.value, ErrorCode.SKILL_CRASHED.value})
"""Remembered failures that may depend on the machine (load, a killed worker): they expire."""
_runner_digest: str | None = None


@dataclass(frozen=True)
class DerivedSkill:
    """What the runner derived: the input schema, the description, the output schema (if the
    return type is describable; else ``None``)."""

    input_schema: dict[str, Any]
    description: str
    output_schema: dict[str, Any] | None


def _runner() -> str:
    global _runner_digest
    if _runner_digest is None:
        from .sandbox.runner_build import runner_digest

        _runner_digest = runner_digest()
    return _runner_digest


def skill_digest(folder: Path, entry: str, shared: Path | None = None) -> str:
    """sha256 over the entry name and every ``.py`` file (path and bytes) under ``folder`` and
    the pack's ``shared`` folder, plus the vendor lock: what a derivation depends on besides
    the runner."""
    h = hashlib.sha256(f"entry\0{entry}\0".encode())
    count = total = 0
    trees = [(folder, "")] + ([(shared, "_shared/")] if shared is not None else [])
    for root, prefix in trees:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(
                d for d in dirnames if d != "__pycache__" and not d.startswith(".")
            )
            for name in sorted(filenames):
                if not (name.endswith(".py") or name == LOCK_FILE):
                    continue
                path = Path(dirpath) / name
                # Only regular files inside the folder: a link (to /dev/zero, to a host file)
                # is never read here, and the guest cannot follow it out of the folder either.
                if path.is_symlink() or not path.is_file():
                    continue
                count += 1
                size = path.stat().st_size
                total += size
                rel = prefix + path.relative_to(root).as_posix()
                if size > MAX_MODULE_BYTES:
                    raise ManifestError(
                        f"{rel!r} is {size} bytes, over the {MAX_MODULE_BYTES}-byte limit "
                        "for one module",
                        source=str(root),
                        fix="split the module, or keep large data out of Python source",
                    )
                if count > _MAX_FILES or total > _MAX_BYTES:
                    raise ManifestError(
                        f"the skill folder holds more than {_MAX_FILES} Python files or "
                        f"{_MAX_BYTES >> 20} MiB of them",
                        source=str(root),
                        fix="keep only the skill's own modules and its vendored dependencies",
                    )
                h.update(f"{rel}\0{size}\0".encode())
                with path.open("rb") as f:  # in chunks: memory stays bounded per file
                    for chunk in iter(lambda: f.read(_CHUNK), b""):
                        h.update(chunk)
    return h.hexdigest()


def _why(err: Any, timeout_ms: int, memory_mb: int) -> tuple[str, str]:
    code = getattr(err, "error_code", None)
    message = str(getattr(err, "message", err))
    if code is ErrorCode.TIMEOUT:
        return (
            f"importing the module to derive its schema did not finish within {timeout_ms} ms "
            "(a loop or slow work at the module's top level?)",
            "move slow work into run(); the top level must only define things",
        )
    if code is ErrorCode.MEMORY_LIMIT:
        return (
            f"importing the module to derive its schema needed more than {memory_mb} MiB "
            "(a large allocation at the module's top level?)",
            "build large data inside run(), not when the module is imported",
        )
    return message, "fix the error above; `bastion test PATH` shows it in context"


def _check(data: dict[str, Any], source: str) -> DerivedSkill:
    inp = data.get("input_schema")
    out = data.get("output_schema")
    desc = data.get("description")
    if (
        not isinstance(inp, dict)
        or not isinstance(desc, str)
        or not (out is None or isinstance(out, dict))
    ):
        raise ManifestError("the runner's description of the skill is malformed", source=source)
    try:
        check_json_schema(inp, "input_schema")
        if out is not None:
            check_json_schema(out, "output_schema")
    except ValueError as exc:
        raise ManifestError(
            f"the schema derived from run()'s type hints is refused: {exc}",
            source=source,
            fix="simplify the type hints, or write input_schema/output_schema in skill.toml",
        ) from None
    return DerivedSkill(inp, desc, out)


def _remembered_failure(hit: dict[str, Any], source: str) -> ManifestError | None:
    """The ``ManifestError`` a memo entry of a failed derivation records, or None (a damaged
    entry, or a timeout older than ``FAILURE_TIMEOUT_TTL_S``: derive again)."""
    failed = hit.get("failed")
    if not isinstance(failed, dict) or not isinstance(failed.get("message"), str):
        return None
    at = hit.get("at")
    if failed.get("code") in _EXPIRING and not (
        isinstance(at, (int, float)) and 0 <= time.time() - at < FAILURE_TIMEOUT_TTL_S
    ):
        return None
    where, fix = failed.get("where"), failed.get("fix")
    return ManifestError(
        failed["message"][:4000],
        source=source,
        where=where[:200] if isinstance(where, str) else None,
        fix=fix[:1000] if isinstance(fix, str) else None,
    )


def _describe(folder: Path, manifest: SkillManifest) -> Any:
    """Run the runner's ``describe-skill`` for the skill: in a worker process when the
    derivation seam (``bastion.sandbox.workers.derive``) is installed, else in this process."""
    assert manifest.entry is not None
    from .sandbox.workers.derive import active_deriver

    deriver = active_deriver()
    if deriver is not None:
        return deriver.describe(folder, manifest.entry, skill=manifest.name)
    from .sandbox.python_skill import describe

    return describe(folder, manifest.entry, skill=manifest.name)


def derive_schema_memoized(folder: Path, manifest: SkillManifest) -> DerivedSkill:
    """The skill's derived schemas: from the memo, else from the runner (``describe-skill``).

    Successes and the skill's own failures are remembered (see the module doc): a second
    discovery of the same bytes is instant and refuses it with the same reason.
    """
    assert manifest.entry is not None
    source = str(folder / manifest.entry)
    verify_vendor(folder, manifest.dependencies)
    try:
        from .sandbox.packshared import shared_folder

        digest = skill_digest(folder, manifest.entry, shared_folder(folder))
    except OSError as exc:
        raise ManifestError(
            f"cannot read the skill's files ({exc.strerror})", source=str(folder)
        ) from None
    memo = default_memo()
    parts = (_runner(), digest)
    if memo is not None:
        hit = memo.get(_MEMO_NAMESPACE, *parts)
        if isinstance(hit, dict):
            remembered = _remembered_failure(hit, source)
            if remembered is not None:
                raise remembered
            try:
                return _check(hit, source)
            except ManifestError:
                pass  # a damaged entry: derive again
    from .sandbox.python_skill import DESCRIBE_MEMORY_MB, DESCRIBE_TIMEOUT_MS

    try:
        described = _describe(folder, manifest)
    except CacheDirError:
        raise  # an unsafe cache folder is the host's configuration error, not this skill's
    except Exception as exc:  # the runner cannot be built or loaded: not the skill's fault
        raise ManifestError(
            f"the Python runner is not available to derive the skill's schema "
            f"({type(exc).__name__}: {str(exc)[:300]})",
            source=source,
            fix="run `bastion doctor`, or write input_schema, output_schema and description "
            "in skill.toml",
        ) from None
    if described.data is None:
        code = getattr(described.error, "error_code", None)
        message, fix = _why(described.error, DESCRIBE_TIMEOUT_MS, DESCRIBE_MEMORY_MB)
        where = f"parameter `{described.param}`" if described.param else None
        fix = described.fix or fix
        if memo is not None and code not in _HOST_FAULTS:
            memo.put(
                _MEMO_NAMESPACE,
                {
                    "failed": {
                        "code": str(code.value if isinstance(code, ErrorCode) else code),
                        "message": message,
                        "where": where,
                        "fix": fix,
                    },
                    "at": time.time(),
                },
                *parts,
            )
        raise ManifestError(message, source=source, where=where, fix=fix)
    derived = _check(described.data, str(folder / SKILL_MANIFEST))
    if memo is not None:
        memo.put(
            _MEMO_NAMESPACE,
            {
                "input_schema": derived.input_schema,
                "description": derived.description,
                "output_schema": derived.output_schema,
            },
            *parts,
        )
    return derived
