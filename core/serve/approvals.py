"""Approvals over MCP: ask the person through the client, bound to the exact call.

Serving step ``tools/call -> guard (approve) -> approvals``. The kernel's guard decides that a
call needs approval; the call is first run with ``McpApproval`` (which records what the kernel
asked and says no), then completed one of three ways:

- 2026-07-28: an ``InputRequiredResult`` with a form elicitation and a ``requestState`` naming
  the kernel's approval binding (skill, version, exact argument hash, grants, tenant). The SDK's
  ``RequestStateBoundary`` seals it with AES-256-GCM under the ``[serve] state_key_env`` key (a
  random per-process key by default), binds it to the caller, the tool name and the argument
  digest, and expires it after ``approval_ttl_s``; on the retry the binding is recomputed and
  must match, so an approval never carries over to other arguments, another tenant or caller,
  a changed grant, or past its expiry.
- 2025 (session) era: a form elicitation sent on the request's own channel, when the client
  declared elicitation support.
- neither: the ``APPROVAL_REQUIRED`` error result, saying why.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from typing import Any, Final

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.request_state import RequestStateBoundary, RequestStateSecurity

from bastion.errors import PolicyError
from bastion.guard import ApprovalRequest
from bastion.policy import Policy

from .auth import current_caller

__all__ = [
    "APPROVAL_KEY",
    "APPROVAL_SCHEMA",
    "McpApproval",
    "approval_message",
    "approved_by",
    "read_state",
    "request_state_boundary",
    "state_for",
]

APPROVAL_KEY: Final[str] = "bastion-approval"
"""The key of the elicitation input request in an ``InputRequiredResult``."""
APPROVAL_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "approve": {"type": "boolean", "title": "Approve this call", "default": False},
    },
    "required": ["approve"],
}
_STATE_VERSION: Final[int] = 1
_MIN_KEY_BYTES: Final[int] = 32


class McpApproval:
    """The approver the server hands the kernel: approves only ``binding`` (none: records the
    request and says no, so the server can ask the person and run the call again)."""

    def __init__(self, binding: str | None = None) -> None:
        self.binding = binding
        self.asked: ApprovalRequest | None = None
        self._lock = threading.Lock()

    def approve(self, request: ApprovalRequest) -> bool:
        with self._lock:
            self.asked = request
        return self.binding is not None and request.binding == self.binding


def approval_message(req: ApprovalRequest) -> str:
    """What the person is asked, with the grants the call would use."""
    args = json.dumps(dict(req.arguments), ensure_ascii=False, sort_keys=True)
    if len(args) > 500:
        args = args[:497] + "..."
    return (
        f"Bastion asks to approve a call of {req.skill} {req.version}: {req.reason}.\n"
        f"Arguments: {args}\n"
        f"Network: {', '.join(req.network) or '-'}; mounts: {', '.join(req.mounts) or '-'}; "
        f"secrets: {', '.join(req.secrets) or '-'}"
    )


def state_for(req: ApprovalRequest, principal: str) -> str:
    """The plaintext request state of one approval round (sealed by the SDK's boundary)."""
    return json.dumps(
        {"v": _STATE_VERSION, "skill": req.skill, "binding": req.binding, "principal": principal},
        sort_keys=True,
    )


def read_state(text: str) -> Mapping[str, Any] | None:
    """The approval state a client echoed back (already unsealed and verified), or None."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("v") != _STATE_VERSION:
        return None
    if not all(isinstance(data.get(k), str) for k in ("skill", "binding", "principal")):
        return None
    return data


def approved_by(response: object) -> bool:
    """Whether an elicitation answer approves: ``accept`` with ``approve`` true."""
    if not isinstance(response, types.ElicitResult) or response.action != "accept":
        return False
    return bool((response.content or {}).get("approve") is True)


def _principal(_ctx: ServerRequestContext[Any, Any]) -> str:
    return current_caller().principal


def request_state_boundary(
    policy: Policy, *, environ: Mapping[str, str] | None = None, audience: str = "bastion"
) -> RequestStateBoundary:
    """The SDK middleware that seals and verifies ``requestState`` for this server."""
    serve = policy.doc.serve
    env = os.environ if environ is None else environ
    if serve.state_key_env:
        key = env.get(serve.state_key_env, "")
        if len(key.encode()) < _MIN_KEY_BYTES:
            raise PolicyError(
                f"[serve] state_key_env names ${serve.state_key_env}, which "
                + ("is not set" if not key else f"holds only {len(key.encode())} bytes"),
                source=policy.source,
                where="serve.state_key_env",
                fix=f"export {serve.state_key_env} with at least {_MIN_KEY_BYTES} random bytes, "
                'e.g. python -c "import secrets; print(secrets.token_hex(32))"',
            )
        security = RequestStateSecurity(
            keys=[key], ttl=serve.approval_ttl_s, bind_principal=_principal, audience=audience
        )
    else:
        security = RequestStateSecurity(
            keys=[os.urandom(32)],
            ttl=serve.approval_ttl_s,
            bind_principal=_principal,
            audience=audience,
        )
    return RequestStateBoundary(security, default_audience=audience)
