"""The guard step: hook decisions before a call runs, and approvals bound to the exact call.

A guard returns ``allow``, ``warn``, ``approve`` (a person must say yes) or ``block``. An
approval is bound to a hash of skill + version + exact arguments + grants, so approving one call
never approves a different one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from .grant import Grant

__all__ = [
    "ApprovalRequest",
    "Approver",
    "GuardAction",
    "GuardDecision",
    "approval_binding",
    "arguments_hash",
    "strongest",
]


class GuardAction(StrEnum):
    """What a guard decided, weakest first."""

    ALLOW = "allow"
    WARN = "warn"
    APPROVE = "approve"
    BLOCK = "block"


_RANK = {GuardAction.ALLOW: 0, GuardAction.WARN: 1, GuardAction.APPROVE: 2, GuardAction.BLOCK: 3}


@dataclass(frozen=True, slots=True)
class GuardDecision:
    """A guard's verdict with the reason shown to the person (and, scrubbed, to the model)."""

    action: GuardAction
    reason: str = ""
    rule: str | None = None
    """Which guard or policy rule decided, for the audit log."""


_ALLOW = GuardDecision(GuardAction.ALLOW)


def strongest(decisions: list[GuardDecision | None]) -> GuardDecision:
    """Combine several guards: the strictest decision wins (block > approve > warn > allow)."""
    best = _ALLOW
    for d in decisions:
        if d is not None and _RANK[d.action] > _RANK[best.action]:
            best = d
    return best


# Built once (``json.dumps`` with options builds an encoder per call); it holds no state.
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr
)


def arguments_hash(arguments: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of the arguments (what the audit log records instead)."""
    text = _CANONICAL.encode(arguments)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def approval_binding(
    skill: str, version: str, arguments: Mapping[str, Any], grant: Grant, tenant: str = ""
) -> str:
    """The hash an approval is bound to: skill, version, exact arguments, the grants and the
    tenant (one tenant's approval never approves another tenant's call)."""
    caps = grant.caps
    grants = {
        "network": sorted(str(r) for r in caps.network),
        "mounts": sorted(f"{m.guest}:{'rw' if m.writable else 'ro'}" for m in caps.mounts),
        "secrets": sorted(caps.secrets),
    }
    text = json.dumps([skill, version, arguments_hash(arguments), grants, tenant], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """What a person is asked to approve."""

    skill: str
    version: str
    arguments: Mapping[str, Any]
    reason: str
    binding: str
    network: tuple[str, ...]
    mounts: tuple[str, ...]
    secrets: tuple[str, ...]


@runtime_checkable
class Approver(Protocol):
    """Asks whoever is responsible; returns True to approve. The CLI asks at the terminal."""

    def approve(self, request: ApprovalRequest) -> bool: ...
