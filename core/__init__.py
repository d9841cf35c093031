"""Bastion: run third-party LLM skills safely.

A kernel discovers skills from pip-installed packs, grants each one only what the operator's
policy allows, runs untrusted skills in a WebAssembly sandbox and hands clean results to an
LLM tool loop. Importing ``bastion`` loads nothing else: each public name is imported on first
use, so the CLI starts fast and never loads wasmtime or the model SDKs it does not need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .agent import Agent, AgentRun
    from .audit import AuditLog, NullAudit
    from .breaker import CircuitBreaker
    from .conversations import ConversationStore
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
    from .metrics import Metrics
    from .models import AnthropicModel, FallbackModel, ScriptedModel, TestModel
    from .native import NativeSkill, native_skill
    from .netrule import NetRule
    from .policy import Policy, load_policy
    from .ratelimit import RateLimiter
    from .result import InvocationContext, ToolError, ToolResult
    from .resultcache import ResultCache
    from .sanitize import SanitizeConfig, Sanitizer
    from .skill import Skill

_LAZY = {
    "BastionError": "errors",
    "ConfigError": "errors",
    "ErrorCode": "errors",
    "ExecutionError": "errors",
    "ManifestError": "errors",
    "PackError": "errors",
    "PolicyError": "errors",
    "RuleError": "errors",
    "Capabilities": "executor",
    "ExecutionRequest": "executor",
    "Executor": "executor",
    "Limits": "executor",
    "Mount": "executor",
    "Grant": "grant",
    "ApprovalRequest": "guard",
    "Approver": "guard",
    "GuardAction": "guard",
    "GuardDecision": "guard",
    "hookimpl": "hookspecs",
    "Kernel": "kernel",
    "SkillStatus": "kernel",
    "ToolSpec": "kernel",
    "PackManifest": "manifest",
    "SkillManifest": "manifest",
    "NativeSkill": "native",
    "native_skill": "native",
    "NetRule": "netrule",
    "Policy": "policy",
    "load_policy": "policy",
    "InvocationContext": "result",
    "ToolError": "result",
    "ToolResult": "result",
    "Skill": "skill",
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
    """Public names load on first use: ``import bastion`` (and the CLI's start) stays cheap."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bastion' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


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
