"""Native skills: trusted, in-process Python functions offered by trusted plugins only.

A native skill runs on the host with the host's rights, so it is registered only by a plugin
whose distribution the policy trusts. Its timeout is enforced by the kernel (the call is
abandoned and reported as ``TIMEOUT``; the thread itself cannot be killed).
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ErrorCode, ExecutionError
from .executor import ExecutionRequest, JSONValue
from .manifest import SkillManifest

__all__ = ["NativeExecutor", "NativeSkill", "native_skill"]


@dataclass(frozen=True, slots=True)
class NativeSkill:
    """A manifest (runtime ``native``) and the callable that implements it: ``func(**input)``."""

    manifest: SkillManifest
    func: Callable[..., Any]


def native_skill(
    *,
    name: str,
    version: str,
    description: str,
    input_schema: dict[str, Any],
    output_schema: dict[str, Any] | None = None,
    timeout_ms: int | None = None,
    deterministic: bool = False,
    permissions: dict[str, Any] | None = None,
) -> Callable[[Callable[..., Any]], NativeSkill]:
    """Decorator turning a function into a ``NativeSkill`` with a validated manifest."""

    def wrap(func: Callable[..., Any]) -> NativeSkill:
        data: dict[str, Any] = {
            "name": name,
            "version": version,
            "description": description,
            "runtime": "native",
            "input_schema": input_schema,
            "deterministic": deterministic,
        }
        if output_schema is not None:
            data["output_schema"] = output_schema
        if timeout_ms is not None:
            data["limits"] = {"timeout_ms": timeout_ms}
        if permissions is not None:
            data["permissions"] = permissions
        return NativeSkill(SkillManifest.model_validate(data), func)

    return wrap


class NativeExecutor:
    """Runs native skills on a small daemon pool so that the kernel can stop waiting on time."""

    runtime = "native"

    def __init__(self, max_workers: int = 8) -> None:
        self._max_workers = max_workers
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _get_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    self._max_workers, thread_name_prefix="bastion-native"
                )
            return self._pool

    def prepare(self, entry: Path) -> None:
        """Native skills need no preparation."""

    def execute(self, request: ExecutionRequest) -> JSONValue:
        func = request.native
        if func is None:
            raise ExecutionError(ErrorCode.INTERNAL, "native skill has no function")
        remaining = request.deadline - time.monotonic()
        if remaining <= 0:
            raise ExecutionError(ErrorCode.TIMEOUT, "no time left before the call started")
        future = self._get_pool().submit(func, **request.input)
        try:
            return future.result(timeout=remaining)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ExecutionError(
                ErrorCode.TIMEOUT, f"the skill did not finish within {request.limits.timeout_ms} ms"
            ) from None
        except ExecutionError:
            raise
        except MemoryError:
            raise ExecutionError(ErrorCode.MEMORY_LIMIT, "the skill ran out of memory") from None
        except Exception as exc:
            raise ExecutionError(
                ErrorCode.SKILL_ERROR, f"{type(exc).__name__}: {exc}", detail=repr(exc)
            ) from exc

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
