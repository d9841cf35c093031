"""How ``bastion run`` isolates its one call, decided before the kernel's heavy imports.

``bastion run`` starts its worker process first thing (``sandbox.workers.prespawn``) so the
worker's interpreter and imports overlap the kernel's own imports, policy and discovery. For
that it must know, before importing pydantic and the policy model, whether the run will be in
process mode: ``peek_isolation`` reads only ``[workers] isolation`` with ``tomllib`` from the
file the policy loader would pick (explicit ``--policy``, ``$BASTION_POLICY``,
``./bastion.toml``). It never raises: a file it cannot read or parse means "no early worker",
and the real loader then reports the problem. A wrong guess costs only speed: an early worker
no pool takes is killed at exit. ``with_isolation`` applies ``--isolation`` to a loaded policy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

__all__ = ["Isolation", "peek_isolation", "with_isolation"]

Isolation = Literal["process", "thread"]
_POLICY_ENV = "BASTION_POLICY"  # the same variable as bastion.policy.POLICY_ENV


def _policy_file(path: str | None) -> Path | None:
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get(_POLICY_ENV)
    if env:
        return Path(env).expanduser()
    local = Path.cwd() / "bastion.toml"
    return local if local.is_file() else None


def peek_isolation(policy_path: str | None, override: str | None = None) -> Isolation | None:
    """``"process"`` or ``"thread"`` as the run will use it, or None if the policy file
    cannot be read cheaply (then no worker is started early)."""
    if override == "process":
        return "process"
    if override == "thread":
        return "thread"
    found = _policy_file(policy_path)
    if found is None:
        return "process"  # the built-in default policy
    try:
        import tomllib

        with found.open("rb") as f:
            data = tomllib.load(f)
    except (OSError, ValueError):
        return None
    workers = data.get("workers")
    value = workers.get("isolation", "process") if isinstance(workers, dict) else "process"
    if value == "process":
        return "process"
    if value == "thread":
        return "thread"
    return None


def with_isolation(policy: Any, isolation: Isolation) -> Any:
    """A copy of the loaded ``Policy`` whose ``[workers] isolation`` is ``isolation``."""
    import dataclasses  # here: this module is imported before the worker is started

    workers = policy.doc.workers.model_copy(update={"isolation": isolation})
    doc = policy.doc.model_copy(update={"workers": workers})
    return dataclasses.replace(policy, doc=doc)
