"""The ``python`` executor: a skill's ``.py`` source run by the generic Python runner component.

The host only *reads* the source (never imports, compiles or runs it); the runner compiles and
runs it inside the guest, in a fresh store and instance per call, so nothing survives a call.
The runner's JSON error becomes an ``ExecutionError``:

- ``code`` from the runner (``SKILL_ERROR``, ``MEMORY_LIMIT``, ``INVALID_INPUT``,
  ``INVALID_OUTPUT``; anything else is treated as ``SKILL_ERROR``), except that an uncaught
  ``bastion_sdk.NetworkDenied`` reports the host's ``NETWORK_DENIED``, and a failure after the
  skill's prints hit their cap reports ``OUTPUT_LIMIT``;
- the message is ``"Type: message (file, line N, in fn)"``; ``detail`` holds the skill's own
  traceback lines (its file only, no host paths);
- traps: epoch/wall-clock deadline -> ``TIMEOUT``, stack overflow and other traps ->
  ``SKILL_CRASHED``, instantiation refused for memory -> ``MEMORY_LIMIT``; an ``ok`` result over
  ``output_kb`` -> ``OUTPUT_LIMIT``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, final

from wasmtime.component import Component, ExportIndex

from bastion.errors import ErrorCode, ExecutionError
from bastion.executor import ExecutionRequest, Mount

from . import engine
from .component_call import CallOutcome, call_instance, instantiate_in
from .component_exec import PREWARM_BUDGET_S, WarmSlot, log_streams, outcome_text
from .pagewarm import PageWarmer
from .pycode import CodeCache
from .python_skill import CALL_SKILL_EXPORT, call_args, folder_call
from .python_stage import MAX_SOURCE_BYTES, read_source, stage
from .runner_build import Progress, load_runner_ready, runner_artifact
from .store import Sandbox

__all__ = [
    "MAX_SOURCE_BYTES",
    "RUNNER_CODES",
    "RUN_SKILL_EXPORT",
    "WARM_EXPORT",
    "PythonExecutor",
    "runner_error",
]

RUN_SKILL_EXPORT: Final[str] = "run-skill"
WARM_EXPORT: Final[str] = "warm"
RUNNER_CODES: Final[frozenset[str]] = frozenset(
    {"SKILL_ERROR", "MEMORY_LIMIT", "INVALID_INPUT", "INVALID_OUTPUT"}
)
"""The codes the runner may report; anything else it says is treated as ``SKILL_ERROR``."""
_MAX_MESSAGE: Final[int] = 2000
_FRAME = re.compile(r'^\s*File "([^"]*)", line (\d+)(?:, in (.+))?$')


def _where(lines: list[str]) -> str:
    for line in reversed(lines):
        m = _FRAME.match(line)
        if m:
            fn = f", in {m.group(3)}" if m.group(3) else ""
            return f" ({m.group(1)}, line {m.group(2)}{fn})"
    return ""


def runner_error(text: str, *, last_denial: ExecutionError | None = None) -> ExecutionError:
    """The ``ExecutionError`` for the runner's JSON error text."""
    try:
        data: Any = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return ExecutionError(ErrorCode.SKILL_ERROR, "the skill failed", detail=text[:4000])
    code_s = str(data.get("code", "SKILL_ERROR"))
    code = ErrorCode(code_s) if code_s in RUNNER_CODES else ErrorCode.SKILL_ERROR
    exc_type = str(data.get("type") or "Error")[:100]
    message = str(data.get("message") or "")[:_MAX_MESSAGE]
    raw_tb = data.get("traceback")
    tb = [str(x) for x in raw_tb][:200] if isinstance(raw_tb, list) else []
    detail = "\n".join(tb) if tb else None
    if exc_type == "NetworkDenied" and last_denial is not None:
        return ExecutionError(last_denial.error_code, last_denial.message, detail=detail)
    if code is ErrorCode.MEMORY_LIMIT:
        return ExecutionError(code, message or "the skill ran out of memory", detail=detail)
    head = f"{exc_type}: {message}" if message else exc_type
    if code is ErrorCode.SKILL_ERROR and exc_type != "SyntaxError":
        head += _where(tb)
    return ExecutionError(code, head, detail=detail)


@final
class PythonExecutor:
    """Runs ``runtime = "python"`` skills in the runner component; thread-safe."""

    runtime = "python"

    def __init__(self, progress: Progress | None = None) -> None:
        self._progress = progress
        self._lock = threading.Lock()
        self._runner: Component | None = None
        self._export: ExportIndex | None = None
        self._call_index: ExportIndex | None = None
        self._closed = False
        self._warm = WarmSlot()
        self._code = CodeCache()
        self._warmer: PageWarmer | None = None
        """Pre-faults the runner's slot after each drop, where the engine relies on it."""
        self._last: tuple[ExecutionRequest, str, tuple[Mount, ...], bool] | None = None
        """The request ``execute`` last ran, its entry and mounts (vendor lock verified at
        that call) and whether the code cache served its entry's current bytes: ``prewarm``
        for the same request object reuses them instead of checking and reading again."""

    def _load(self) -> tuple[Component, ExportIndex]:
        runner, export = self._runner, self._export
        if runner is not None and export is not None:
            return runner, export
        with self._lock:
            if self._runner is None or self._export is None:
                runner = load_runner_ready(self._progress)
                export = runner.get_export_index(RUN_SKILL_EXPORT)
                if export is None:
                    raise ExecutionError(
                        ErrorCode.INTERNAL, "the Python runner exports no run-skill function"
                    )
                self._runner, self._export = runner, export
                self._warmer = self._open_warmer()
            return self._runner, self._export

    @staticmethod
    def _open_warmer() -> PageWarmer | None:
        if not engine.prefaulting():
            return None
        artifact = runner_artifact()
        return None if artifact is None else PageWarmer.open(artifact, engine.keep_resident())

    def _drop(self, sandbox: Sandbox) -> Callable[[], None]:
        """The store's drop a worker runs after answering: with a warmer, the pages this call
        wrote are read first and populated into the reset slot after."""
        warmer = self._warmer
        if warmer is None:
            return sandbox.close

        def drop() -> None:
            warmer.learn()
            sandbox.close()
            warmer.warm()

        return drop

    _source = staticmethod(read_source)

    def load(self) -> None:
        """Load the built runner now (a worker does this before its OS limits close the
        cache to writes); builds and compiles it first if needed."""
        self._load()

    def prepare(self, entry: Path) -> None:
        """Build/compile the runner (slow once, then cached) and check the source is readable."""
        self._load()
        self._source(entry)
        self._call_export()

    def stage(self, entry: Path) -> bool:
        """``prepare`` for calls a worker runs: check the source is readable; True if the
        runner is already compiled in the cache, so this process need not load it (the worker
        loads and verifies it; a miss is repaired). On False, call ``prepare``."""
        return stage(entry)

    def execute(
        self, request: ExecutionRequest, *, after: list[Callable[[], None]] | None = None
    ) -> bytes:
        """Run the skill's ``run(**input)`` in a fresh runner instance; returns JSON bytes.

        The instance is the one ``prewarm`` made for this skill, grants and limits if there is
        one (a worker makes it before the call arrives), else a new one. ``after``, when given,
        receives the store's drop instead of running it, so a worker answers first.

        The entry's code object comes from the ``CodeCache`` when its bytes are the compiled
        ones; on a miss the guest compiles the file, and the cache is filled after the call
        (by ``prewarm`` in a worker, here otherwise).
        """
        if self._closed:
            raise ExecutionError(ErrorCode.INTERNAL, "the Python executor is closed")
        entry_rel, mounts = folder_call(request)
        waited = time.monotonic()
        runner, _ = self._load()
        export = self._call_export()
        waited = time.monotonic() - waited
        if waited > 0.001:  # building or compiling the runner never counts against the call
            request = dataclasses.replace(request, deadline=request.deadline + waited)
        code = self._code.context_code(request)
        if after is not None:  # a worker: its prewarm for this request follows
            self._last = (request, entry_rel, mounts, code is not None)
        warm = self._warm.take(request)
        if warm is not None:
            sandbox, instance = warm
            sandbox.rearm(request.deadline, request)
        else:
            sandbox = self._sandbox(request, mounts, request.deadline, request)
            instance = None
        try:
            failed: CallOutcome | None = None
            if instance is None:
                instance, failed = instantiate_in(sandbox, runner)
            if failed is not None:
                outcome = failed
            else:
                args = call_args(request, entry_rel, code)
                outcome = call_instance(sandbox, instance, export, *args)
            log_streams(sandbox, request)
            ok, text = outcome_text(outcome, sandbox)
            state = sandbox.state
        finally:
            if after is not None:
                after.append(self._drop(sandbox))
            else:
                sandbox.close()
        if code is None and after is None and self._code.needs(request):
            self._code.fill(request, entry_rel, runner)
        if ok:
            return text.encode("utf-8")
        if state.stdout.capped or state.stderr.capped:
            raise ExecutionError(
                ErrorCode.OUTPUT_LIMIT,
                f"skill printed more than its output limit of {request.limits.output_kb} KiB",
            )
        raise runner_error(text, last_denial=state.last_denial)

    def _call_export(self) -> ExportIndex:
        export = self._call_index
        if export is None:
            runner, _ = self._load()
            export = runner.get_export_index(CALL_SKILL_EXPORT)
            if export is None:
                raise ExecutionError(
                    ErrorCode.INTERNAL, "the Python runner exports no call-skill function"
                )
            self._call_index = export
        return export

    @staticmethod
    def _sandbox(
        request: ExecutionRequest, mounts: tuple[Mount, ...], deadline: float, bound: Any
    ) -> Sandbox:
        return Sandbox(
            skill=request.skill,
            stdin=b"",
            limits=request.limits,
            deadline=deadline,
            mounts=mounts,
            request=bound,
        )

    def prewarm(self, request: ExecutionRequest) -> None:
        """Instantiate the runner for the next call shaped like ``request`` (same skill,
        mounts and limits) and hold it; the instance will serve exactly one call."""
        if self._closed:
            return
        runner, _export = self._load()
        last, self._last = self._last, None  # held only until this prewarm
        if last is not None and last[0] is request:
            # Just run: its vendor lock was verified for that call (the next call verifies
            # again before any skill code runs), and a cache hit means the entry's bytes were
            # the compiled ones then (if they change, the next call's check sees it and the
            # prewarm after it compiles them again).
            _, entry_rel, mounts, served = last
        else:
            entry_rel, mounts = folder_call(request)
            served = False
        if not served and self._code.needs(request):
            self._code.fill(request, entry_rel, runner)
        sandbox = self._sandbox(request, mounts, time.monotonic() + PREWARM_BUDGET_S, None)
        instance, failed = instantiate_in(sandbox, runner)
        if failed is None and instance is not None:
            # Bastion's own no-op export, no skill code: the bindings' first-call set-up
            # (~0.15 ms) happens here instead of in the skill's call.
            failed = call_instance(sandbox, instance, WARM_EXPORT)
            failed = failed if failed.fault is not None else None
        if failed is not None or instance is None:
            sandbox.close()
            return
        self._warm.put(request, sandbox, instance)

    def close(self) -> None:
        """Drop this executor's reference to the runner (the caches keep the compiled form)."""
        with self._lock:
            self._closed = True
            self._runner = None
            self._export = None
            self._call_index = None
        self._last = None
        self._warm.clear()
        self._code.clear()
        warmer, self._warmer = self._warmer, None
        if warmer is not None:
            warmer.close()
