"""Bastion: run third-party LLM skills safely.

A kernel discovers skills from pip-installed packs, grants each one only what the operator's
policy allows, runs untrusted skills in a WebAssembly sandbox and hands clean results to an
LLM tool loop. Importing ``bastion`` loads neither wasmtime nor the model SDKs.
"""

from __future__ import annotations

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

__all__ = [
    "ApprovalRequest",
    "Approver",
    "BastionError",
    "Capabilities",
    "ConfigError",
    "ErrorCode",
    "ExecutionError",
    "ExecutionRequest",
    "Executor",
    "Grant",
    "GuardAction",
    "GuardDecision",
    "InvocationContext",
    "Kernel",
    "Limits",
    "ManifestError",
    "Mount",
    "NativeSkill",
    "NetRule",
    "PackError",
    "PackManifest",
    "Policy",
    "PolicyError",
    "RuleError",
    "Skill",
    "SkillManifest",
    "SkillStatus",
    "ToolError",
    "ToolResult",
    "ToolSpec",
    "__version__",
    "hookimpl",
    "load_policy",
    "native_skill",
]
