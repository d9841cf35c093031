"""Typed errors and the stable error codes of tool results.

Two families, drawn as in httpx's ``_exceptions.py``::

    BastionError                 any error raised by Bastion itself
    ├── ConfigError              operator or author input is wrong (exit status 2)
    │   ├── ManifestError        a skill.toml or bastion-pack.toml is invalid
    │   ├── PolicyError          bastion.toml is invalid
    │   ├── RuleError            a network rule does not follow the grammar
    │   └── PackError            a skill pack cannot be loaded
    └── ExecutionError           a skill invocation failed; carries an ErrorCode

Every message quotes the offending value and says how to fix it. ``ExecutionError`` keeps a
public ``message`` (safe for the model) apart from ``detail`` (audit and debug log only).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = [
    "RETRYABLE",
    "BastionError",
    "ConfigError",
    "ErrorCode",
    "ExecutionError",
    "ManifestError",
    "PackError",
    "PolicyError",
    "RuleError",
]


class ErrorCode(StrEnum):
    """Stable error codes of a ``ToolResult``; the string values are a public contract."""

    NOT_FOUND = "NOT_FOUND"
    DENIED = "DENIED"
    INVALID_INPUT = "INVALID_INPUT"
    APPROVAL_REQUIRED = "APPROVAL_REQUIRED"
    RATE_LIMITED = "RATE_LIMITED"
    CIRCUIT_OPEN = "CIRCUIT_OPEN"
    TIMEOUT = "TIMEOUT"
    MEMORY_LIMIT = "MEMORY_LIMIT"
    OUTPUT_LIMIT = "OUTPUT_LIMIT"
    NETWORK_DENIED = "NETWORK_DENIED"
    FS_DENIED = "FS_DENIED"
    SKILL_ERROR = "SKILL_ERROR"
    SKILL_CRASHED = "SKILL_CRASHED"
    INVALID_OUTPUT = "INVALID_OUTPUT"
    INTERNAL = "INTERNAL"
    CANCELLED = "CANCELLED"
    AUDIT_UNAVAILABLE = "AUDIT_UNAVAILABLE"
    NOT_READY = "NOT_READY"
    STATE_UNAVAILABLE = "STATE_UNAVAILABLE"

    @property
    def retryable(self) -> bool:
        """Whether the same call may succeed if simply tried again later."""
        return RETRYABLE[self]


RETRYABLE: Final[dict[ErrorCode, bool]] = {
    ErrorCode.NOT_FOUND: False,
    ErrorCode.DENIED: False,
    ErrorCode.INVALID_INPUT: False,
    ErrorCode.APPROVAL_REQUIRED: False,
    ErrorCode.RATE_LIMITED: True,
    ErrorCode.CIRCUIT_OPEN: True,
    ErrorCode.TIMEOUT: True,
    ErrorCode.MEMORY_LIMIT: False,
    ErrorCode.OUTPUT_LIMIT: False,
    ErrorCode.NETWORK_DENIED: False,
    ErrorCode.FS_DENIED: False,
    ErrorCode.SKILL_ERROR: False,
    ErrorCode.SKILL_CRASHED: False,
    ErrorCode.INVALID_OUTPUT: False,
    ErrorCode.INTERNAL: False,
    ErrorCode.CANCELLED: False,
    ErrorCode.AUDIT_UNAVAILABLE: True,
    ErrorCode.NOT_READY: True,
    ErrorCode.STATE_UNAVAILABLE: True,
}


class BastionError(Exception):
    """Base of every error Bastion raises; ``code`` is a stable string."""

    code: str = "BASTION_ERROR"


class ConfigError(BastionError):
    """Configuration given by an operator or author is wrong; the CLI exits with status 2.

    ``source`` names the file (or other origin), ``where`` the field or line, ``fix`` the remedy.
    """

    code = "CONFIG_INVALID"

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        where: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.message = message
        self.source = source
        self.where = where
        self.fix = fix
        super().__init__(self._render())

    def _render(self) -> str:
        head = ""
        if self.source:
            head = self.source + (f" [{self.where}]" if self.where else "") + ": "
        elif self.where:
            head = f"[{self.where}]: "
        tail = f" Fix: {self.fix}" if self.fix else ""
        return (
            f"{head}{self.message}.{tail}"
            if not self.message.endswith(".")
            else (f"{head}{self.message}{tail}")
        )


class ManifestError(ConfigError):
    """A skill manifest (``skill.toml``) or pack manifest (``bastion-pack.toml``) is invalid."""

    code = "MANIFEST_INVALID"


class PolicyError(ConfigError):
    """The operator's policy (``bastion.toml``) is invalid."""

    code = "POLICY_INVALID"


class RuleError(ConfigError):
    """A network rule does not follow ``scheme://host[:port]``."""

    code = "RULE_INVALID"


class PackError(ConfigError):
    """A skill pack cannot be loaded (missing folder, unreadable files, duplicate names)."""

    code = "PACK_INVALID"


class ExecutionError(BastionError):
    """An invocation failed with a stable ``ErrorCode``.

    ``message`` is short and safe to show a model; ``detail`` may hold host-side facts
    (paths, tracebacks) and goes only to the audit and debug logs.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        detail: str | None = None,
        retryable: bool | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        self.error_code = code
        self.code = code.value
        self.message = message
        self.detail = detail
        self.retryable = code.retryable if retryable is None else retryable
        self.retry_after_s = retry_after_s
        super().__init__(f"{code.value}: {message}")
