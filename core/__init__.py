"""Bastion: run third-party LLM skills safely.

A kernel discovers skills from pip-installed packs, grants each one only what the operator's
policy allows, runs untrusted skills in a WebAssembly sandbox and hands clean results to an
LLM tool loop. Importing ``bastion`` loads neither wasmtime nor the model SDKs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    BastionError,
    ConfigError,
    ErrorCode,
    ExecutionError,
    ManifestError,
    PackError,
    PolicyError,
    RuleError,
)
from .executor import Capabilities, ExecutionRequest, Executor, Limits, Mount
from .grant import Grant
from .guard import ApprovalRequest, Approver, GuardAction, GuardDecision
from .hookspecs import hookimpl
from .kernel import Kernel, SkillStatus, ToolSpec
from .manifest import PackManifest, SkillManifest
from .native import NativeSkill, native_skill
from .netrule import NetRule
from .policy import Policy, load_policy
from .result import InvocationContext, ToolError, ToolResult
from .skill import Skill

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .agent import Agent, AgentRun
    from .audit import AuditLog, NullAudit
    from .breaker import CircuitBreaker
    from .conversations import ConversationStore
    from .metrics import Metrics
    from .models import AnthropicModel, FallbackModel, ScriptedModel, TestModel
    from .ratelimit import RateLimiter
    from .resultcache import ResultCache
    from .sanitize import SanitizeConfig, Sanitizer

_LAZY = {
    "CircuitBreaker": "breaker",
    "Metrics": "metrics",
    "RateLimiter": "ratelimit",
    "ResultCache": "resultcache",
    "SanitizeConfig": "sanitize",
    "Sanitizer": "sanitize",
    "Agent": "agent",
    "AgentRun": "agent",
    "AnthropicModel": "models",
    "AuditLog": "audit",
    "ConversationStore": "conversations",
    "FallbackModel": "models",
    "NullAudit": "audit",
    "ScriptedModel": "models",
    "TestModel": "models",
}


def __getattr__(name: str) -> Any:
    """The LLM-loop names load on first use, so ``import bastion`` stays cheap."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bastion' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "Agent",
    "AgentRun",
    "AnthropicModel",
    "ApprovalRequest",
    "Approver",
    "AuditLog",
    "BastionError",
    "Capabilities",
    "CircuitBreaker",
    "ConfigError",
    "ConversationStore",
    "ErrorCode",
    "ExecutionError",
    "ExecutionRequest",
    "Executor",
    "FallbackModel",
    "Grant",
    "GuardAction",
    "GuardDecision",
    "InvocationContext",
    "Kernel",
    "Limits",
    "ManifestError",
    "Metrics",
    "Mount",
    "NativeSkill",
    "NetRule",
    "NullAudit",
    "PackError",
    "PackManifest",
    "Policy",
    "PolicyError",
    "RateLimiter",
    "ResultCache",
    "RuleError",
    "SanitizeConfig",
    "Sanitizer",
    "ScriptedModel",
    "Skill",
    "SkillManifest",
    "SkillStatus",
    "TestModel",
    "ToolError",
    "ToolResult",
    "ToolSpec",
    "__version__",
    "hookimpl",
    "load_policy",
    "native_skill",
]
