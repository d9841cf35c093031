"""What an invocation returns (``ToolResult``) and the context a caller passes in."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .errors import ErrorCode, ExecutionError

__all__ = ["InvocationContext", "ToolError", "ToolResult"]


@dataclass(frozen=True, slots=True)
class ToolError:
    """A failed invocation's public error: stable ``code``, scrubbed ``message``, ``retryable``."""

    code: str
    message: str
    retryable: bool
    retry_after_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
        }
        if self.retry_after_s is not None:
            out["retry_after_s"] = self.retry_after_s
        return out


@dataclass(frozen=True, slots=True)
class ToolResult:
    """The outcome of one invocation: ``ok`` with ``output``, or an ``error``; never raises."""

    ok: bool
    output: Any = None
    error: ToolError | None = None
    duration_ms: float = 0.0
    invocation_id: str = ""

    @classmethod
    def success(cls, output: Any, *, duration_ms: float, invocation_id: str) -> ToolResult:
        return cls(True, output, None, duration_ms, invocation_id)

    @classmethod
    def failure(
        cls,
        code: ErrorCode,
        message: str,
        *,
        duration_ms: float = 0.0,
        invocation_id: str = "",
        retryable: bool | None = None,
        retry_after_s: float | None = None,
    ) -> ToolResult:
        err = ToolError(
            code.value,
            message,
            code.retryable if retryable is None else retryable,
            retry_after_s,
        )
        return cls(False, None, err, duration_ms, invocation_id)

    @classmethod
    def from_error(
        cls, exc: ExecutionError, *, duration_ms: float = 0.0, invocation_id: str = ""
    ) -> ToolResult:
        return cls.failure(
            exc.error_code,
            exc.message,
            duration_ms=duration_ms,
            invocation_id=invocation_id,
            retryable=exc.retryable,
            retry_after_s=exc.retry_after_s,
        )

    def to_dict(self) -> dict[str, Any]:
        """The ``bastion run --json`` envelope: ok, output, error, duration_ms."""
        return {
            "ok": self.ok,
            "output": self.output,
            "error": self.error.to_dict() if self.error else None,
            "duration_ms": round(self.duration_ms, 3),
        }


def _new_id() -> str:
    return os.urandom(8).hex()


@dataclass(frozen=True, slots=True)
class InvocationContext:
    """Who is calling: tenant, caller, roles; plus a fresh invocation id and free-form labels."""

    tenant: str = "default"
    caller: str = "local"
    roles: tuple[str, ...] = ()
    session: str | None = None
    invocation_id: str = field(default_factory=_new_id)
    labels: dict[str, str] = field(default_factory=dict)
