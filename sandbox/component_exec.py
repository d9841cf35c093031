"""The ``component`` executor: a WASM component of the ``bastion:skill`` ``skill`` world.

The skill exports ``run: func(input: string) -> result<string, string>``. Each call gets a fresh
store (memory limit, epoch deadline + wall clock, WASI with only the granted mounts) and a fresh
instance; ``ok`` text is returned as bytes (the kernel parses and sanitizes it), ``err`` text
becomes ``SKILL_ERROR``. Compiled components come from the verified compile cache.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, final

import wasmtime
from wasmtime.component import Component, Variant

from bastion.errors import ErrorCode, ExecutionError
from bastion.executor import ExecutionRequest

from .cache import CompileCache, default_cache
from .component_call import CallOutcome, call_instance, instantiate_in
from .errors_map import fault_to_error
from .startwait import excluding
from .store import Sandbox

__all__ = [
    "MAX_ERROR_CHARS",
    "PREWARM_BUDGET_S",
    "RUN_EXPORT",
    "ComponentExecutor",
    "WarmSlot",
    "log_streams",
    "outcome_text",
]

RUN_EXPORT: Final[str] = "run"
MAX_ERROR_CHARS: Final[int] = 2000
"""Characters of a skill's error text kept in the public message."""


PREWARM_BUDGET_S: Final[float] = 30.0
"""Epoch budget of a prewarmed instance until its call re-arms it (instantiation only)."""


def warm_key(request: ExecutionRequest) -> tuple[Any, ...]:
    """What a prewarmed instance was made for: a call with another key cannot use it."""
    return (request.runtime, request.skill, request.entry, request.limits, request.caps.mounts)


class WarmSlot:
    """At most one prewarmed ``(sandbox, instance)``; taken once by a matching call, else
    dropped. No instance ever serves two calls: ``take`` hands it out and forgets it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: tuple[tuple[Any, ...], Sandbox, Any] | None = None

    def put(self, request: ExecutionRequest, sandbox: Sandbox, instance: Any) -> None:
        with self._lock:
            old, self._held = self._held, (warm_key(request), sandbox, instance)
        if old is not None:
            old[1].close()

    def take(self, request: ExecutionRequest) -> tuple[Sandbox, Any] | None:
        with self._lock:
            held, self._held = self._held, None
        if held is None:
            return None
        if held[0] != warm_key(request):
            held[1].close()
            return None
        return held[1], held[2]

    def clear(self) -> None:
        with self._lock:
            held, self._held = self._held, None
        if held is not None:
            held[1].close()


def outcome_text(outcome: CallOutcome, sandbox: Sandbox) -> tuple[bool, str]:
    """``(ok, text)`` of a ``result<string, string>`` call, or raise its ``ExecutionError``."""
    state = sandbox.state
    if outcome.fault is not None:
        fault = outcome.fault
        if fault.exit_code is not None and not state.stdout.capped and not state.timed_out:
            raise ExecutionError(
                ErrorCode.SKILL_ERROR,
                f"the skill exited (status {fault.exit_code}) instead of returning a result",
            )
        err = fault_to_error(fault, state, instantiating=outcome.instantiating)
        raise err or ExecutionError(
            ErrorCode.SKILL_CRASHED, "the skill crashed", detail=fault.message
        )
    if state.host_error is not None:
        raise state.host_error
    value = outcome.value
    if not isinstance(value, Variant) or not isinstance(value.payload, str):
        raise ExecutionError(ErrorCode.SKILL_CRASHED, "the skill returned no result")
    ok = value.tag == "ok"
    if ok and len(value.payload) > state.limits.output_bytes:
        raise ExecutionError(
            ErrorCode.OUTPUT_LIMIT,
            f"skill output exceeded the limit of {state.limits.output_kb} KiB",
        )
    return ok, value.payload


def log_streams(sandbox: Sandbox, request: ExecutionRequest) -> None:
    """Send what the guest printed (already capped by the sandbox) to the debug log."""
    st = sandbox.state
    for name, sink in (("stdout", st.stdout), ("stderr", st.stderr)):
        if sink.total:
            request.logger.debug(
                f"skill.{name}",
                text=bytes(sink.buf[:1000]).decode("utf-8", "replace"),
                bytes=sink.total,
                capped=sink.capped,
            )


@final
class ComponentExecutor:
    """Runs ``runtime = "component"`` skills; thread-safe, a fresh store and instance per call."""

    runtime = "component"

    def __init__(self, cache: CompileCache | None = None) -> None:
        self._cache = cache
        self._lock = threading.Lock()
        self._closed = False
        self._warm = WarmSlot()

    def _component(self, entry: Path) -> Component:
        cache = self._cache if self._cache is not None else default_cache()
        try:
            component = cache.component_from_file(entry)
        except OSError as exc:
            raise ExecutionError(
                ErrorCode.NOT_FOUND,
                f"component file {entry.name!r} cannot be read",
                detail=f"{entry}: {exc}",
            ) from None
        except wasmtime.WasmtimeError as exc:  # wasmtime rejects the bytes
            raise ExecutionError(
                ErrorCode.SKILL_CRASHED,
                f"{entry.name!r} is not a valid WASM component",
                detail=str(exc)[:2000],
            ) from None
        if component.get_export_index(RUN_EXPORT) is None:
            raise ExecutionError(
                ErrorCode.SKILL_CRASHED,
                f"{entry.name!r} exports no 'run' function (world bastion:skill/skill)",
            )
        return component

    def prepare(self, entry: Path) -> None:
        """Compile (and cache) the component and check it exports ``run``."""
        self._component(entry)

    def execute(
        self, request: ExecutionRequest, *, after: list[Callable[[], None]] | None = None
    ) -> bytes:
        """Call ``run(input_json)`` in a fresh instance; returns the ``ok`` text as UTF-8.

        A prewarmed instance made for this skill, grants and limits is used if one is held;
        ``after``, when given, receives the store's drop so a worker can answer first.
        """
        if self._closed:
            raise ExecutionError(ErrorCode.INTERNAL, "the component executor is closed")
        since = time.monotonic()
        component = self._component(request.entry)
        request = excluding(request, since)  # a first-use compile is host time (startwait.py)
        warm = self._warm.take(request)
        if warm is not None:
            sandbox, instance = warm
            sandbox.rearm(request.deadline, request)
        else:
            sandbox = self._sandbox(request, request.deadline, request)
            instance = None
        try:
            failed: CallOutcome | None = None
            if instance is None:
                instance, failed = instantiate_in(sandbox, component)
            if failed is not None:
                outcome = failed
            else:
                outcome = call_instance(sandbox, instance, RUN_EXPORT, request.input_json)
            log_streams(sandbox, request)
            ok, text = outcome_text(outcome, sandbox)
        finally:
            if after is not None:
                after.append(sandbox.close)
            else:
                sandbox.close()
        if not ok:
            short = text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "..."
            raise ExecutionError(ErrorCode.SKILL_ERROR, short or "the skill failed")
        return text.encode("utf-8")

    @staticmethod
    def _sandbox(request: ExecutionRequest, deadline: float, bound: Any) -> Sandbox:
        return Sandbox(
            skill=request.skill,
            stdin=b"",
            limits=request.limits,
            deadline=deadline,
            mounts=request.caps.mounts,
            request=bound,
        )

    def prewarm(self, request: ExecutionRequest) -> None:
        """Instantiate the component for the next call shaped like ``request`` and hold it."""
        if self._closed:
            return
        component = self._component(request.entry)
        sandbox = self._sandbox(request, time.monotonic() + PREWARM_BUDGET_S, None)
        instance, failed = instantiate_in(sandbox, component)
        if failed is not None or instance is None:
            sandbox.close()
            return
        self._warm.put(request, sandbox, instance)

    def close(self) -> None:
        """Nothing to release but the flag: compiled components live in the shared cache."""
        with self._lock:
            self._closed = True
        self._warm.clear()
