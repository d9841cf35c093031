"""A small real ToolHost for loop tests: plain Python functions as tools.

It is test scaffolding for the loop, not a stand-in for the kernel's internals: it offers the
functions registered on it and turns what they return (or raise) into ``ToolResult``s.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bastion.errors import ErrorCode
from bastion.result import InvocationContext, ToolResult

__all__ = ["Call", "FunctionHost", "Spec"]


@dataclass(frozen=True, slots=True)
class Spec:
    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    arguments: Any
    context: InvocationContext | None
    approver: Any


@dataclass
class FunctionHost:
    """Tools are functions (sync or async); a returned ToolResult is passed through as is."""

    funcs: dict[str, Callable[..., Any]] = field(default_factory=dict)
    specs: dict[str, Spec] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    def add(
        self,
        name: str,
        func: Callable[..., Any],
        *,
        description: str = "",
        schema: dict[str, Any] | None = None,
    ) -> FunctionHost:
        self.funcs[name] = func
        self.specs[name] = Spec(
            name, description or f"the {name} tool", schema or {"type": "object", "properties": {}}
        )
        return self

    def tools(self) -> list[Spec]:
        return list(self.specs.values())

    async def ainvoke(
        self,
        name: str,
        arguments: Any,
        *,
        context: InvocationContext | None = None,
        approver: Any = None,
    ) -> ToolResult:
        self.calls.append(Call(name, arguments, context, approver))
        start = time.perf_counter()
        func = self.funcs.get(name)
        if func is None:
            return ToolResult.failure(ErrorCode.NOT_FOUND, f"no skill named {name!r}")
        try:
            out = func(**arguments)
            if inspect.isawaitable(out):
                out = await out
        except Exception as exc:
            return ToolResult.failure(
                ErrorCode.SKILL_ERROR,
                f"{type(exc).__name__}: {exc}",
                duration_ms=(time.perf_counter() - start) * 1000,
            )
        if isinstance(out, ToolResult):
            return out
        return ToolResult.success(
            out,
            duration_ms=(time.perf_counter() - start) * 1000,
            invocation_id=context.invocation_id if context else "",
        )
