"""The hooks a Bastion plugin may implement (pluggy project name ``bastion``).

Core features are plugins too: the built-in executors are registered through
``bastion_executors`` exactly as a third party's would be. Every hook is documented in
``docs/plugins.md``; a test fails if one is not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from collections.abc import Callable

    from .executor import Executor
    from .grant import Grant
    from .guard import GuardDecision
    from .models import Model
    from .native import NativeSkill
    from .result import InvocationContext
    from .skill import Skill

__all__ = ["PROJECT", "hookimpl", "hookspec"]

PROJECT = "bastion"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def bastion_executors() -> list[Executor]:  # type: ignore[empty-body]
    """Return executors to register, each serving one ``runtime`` name."""


@hookspec
def bastion_skills() -> list[NativeSkill]:  # type: ignore[empty-body]
    """Return native (in-process) skills; only plugins of trusted distributions are asked."""


@hookspec
def bastion_guard(
    skill: Skill, arguments: Mapping[str, Any], grant: Grant, context: InvocationContext
) -> GuardDecision | None:
    """Decide whether a call may go ahead: return a GuardDecision (block, approve, warn) or None."""


@hookspec
def bastion_audit_event(event: str, fields: Mapping[str, Any]) -> None:
    """Observe an audit event after it was recorded (metrics, forwarding); must not raise."""


@hookspec
def bastion_model_providers() -> Mapping[str, Callable[[str], Model]]:  # type: ignore[empty-body]
    """Return model factories by prefix, so that a model named 'PREFIX:NAME' resolves to them."""
