"""The ``wasm`` executor: runs a WASI (preview 1) command module, one fresh store per call.

``prepare(entry)`` compiles (or loads from the verified cache) and pre-links the module.
``execute(request)`` instantiates it in a new ``Sandbox`` (limits, epoch deadline, WASI with
stdin = ``request.input_json``, the granted mounts) and runs ``_start``; the bytes the skill
wrote to stdout are returned for the kernel to parse and sanitize. Exit status 0 is success;
everything else becomes an ``ExecutionError`` (see ``errors_map.py``).

Thread-safe: the linker and the pre-linked modules are shared (wasmtime's are ``Send + Sync``),
every call has its own store, and guests run with the GIL released.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, final

import wasmtime

from bastion.closing import Closeable
from bastion.errors import ErrorCode, ExecutionError
from bastion.executor import ExecutionRequest
from bastion.logs import get_logger

from .cache import CompileCache, Progress, default_cache
from .engine import get_engine
from .errors_map import fault_to_error
from .hostabi import define_host_abi
from .rawcall import call_start, instantiate
from .startwait import excluding
from .store import Sandbox
from .ticker import guest_running, remaining_ms

__all__ = ["WasiModuleExecutor"]

_log = get_logger("bastion.sandbox.wasm")


@final
class WasiModuleExecutor(Closeable):
    """``runtime = "wasm"``: WASI command modules, sandboxed by wasmtime."""

    runtime = "wasm"

    def __init__(
        self, cache: CompileCache | None = None, *, progress: Progress | None = None
    ) -> None:
        self._cache = cache
        self._progress = progress
        self._lock = threading.Lock()
        self._linker: wasmtime.Linker | None = None
        self._pres: dict[int, tuple[wasmtime.Module, wasmtime.InstancePre]] = {}

    # -- Executor protocol ---------------------------------------------------------------------

    def prepare(self, entry: Path) -> None:
        """Compile (or load from cache) and pre-link the module at ``entry``."""
        self._pre(self._module(entry))

    def execute(self, request: ExecutionRequest) -> bytes:
        """Run the module once; returns its stdout. Raises ``ExecutionError``."""
        if remaining_ms(request.deadline) <= 0:
            raise ExecutionError(
                ErrorCode.TIMEOUT,
                f"skill exceeded its time limit of {request.limits.timeout_ms} ms",
                detail="deadline passed before the module started",
            )
        since = time.monotonic()
        pre = self._pre(self._module(request.entry))
        # Compiling or loading on first use is host time: never the call's (startwait.py).
        return self.run(pre, excluding(request, since))

    def close(self) -> None:
        """Forget pre-linked modules and the linker (the compile cache stays)."""
        with self._lock:
            self._pres.clear()
            linker, self._linker = self._linker, None
        if linker is not None:
            linker.close()

    # -- lower-level API (tests, benchmarks, other executors) ---------------------------------

    def module_bytes(self, wasm: bytes) -> wasmtime.InstancePre:
        """Pre-link a module given as bytes (compiled through the cache)."""
        return self._pre(self.cache.module(wasm, progress=self._progress))

    def run(self, pre: wasmtime.InstancePre, request: ExecutionRequest) -> bytes:
        """Run a pre-linked module for ``request`` in a fresh sandbox."""
        started = time.monotonic()
        with Sandbox(
            skill=request.skill,
            stdin=request.input_json.encode("utf-8"),
            limits=request.limits,
            deadline=request.deadline,
            mounts=request.caps.mounts,
            request=request,
        ) as sb:
            try:
                assert sb.store is not None
                with guest_running():
                    instance, fault = instantiate(pre, sb.store)
                    if instance is not None:
                        fault = call_start(sb.store, instance)
                if instance is None:
                    err = fault_to_error(fault, sb.state, instantiating=True)
                    raise err or ExecutionError(ErrorCode.SKILL_CRASHED, "instantiation failed")
                # The memory size only matters for a run that did not end normally.
                mem = sb.memory_size(instance) if fault is not None else 0
                err = fault_to_error(fault, sb.state, memory_bytes=mem)
            finally:
                client: Any = sb.state.extra.pop("http_client", None)
                if client is not None and hasattr(client, "close"):
                    client.close()
            # The request's logger is already bound; the module's lazy one would bind per call.
            (request.logger or _log).debug(
                "wasm.run",
                skill=request.skill,
                ok=err is None,
                code=err.code if err else None,
                ms=round((time.monotonic() - started) * 1000, 3),
            )
            if err is not None:
                raise err
            return bytes(sb.state.stdout.buf)

    @property
    def cache(self) -> CompileCache:
        if self._cache is None:
            self._cache = default_cache()
        return self._cache

    # -- internals -----------------------------------------------------------------------------

    def _module(self, entry: Path) -> wasmtime.Module:
        try:
            return self.cache.module_from_file(entry, progress=self._progress)
        except FileNotFoundError as exc:
            raise ExecutionError(
                ErrorCode.NOT_FOUND,
                f"skill entry {Path(entry).name!r} does not exist",
                detail=str(exc),
            ) from None
        except wasmtime.WasmtimeError as exc:
            raise ExecutionError(
                ErrorCode.SKILL_CRASHED,
                f"skill entry {Path(entry).name!r} is not a valid WebAssembly module",
                detail=str(exc)[:2000],
            ) from None

    def _linker_locked(self) -> wasmtime.Linker:
        if self._linker is None:
            linker = wasmtime.Linker(get_engine())
            linker.define_wasi()
            define_host_abi(linker)
            self._linker = linker
        return self._linker

    def _pre(self, module: wasmtime.Module) -> wasmtime.InstancePre:
        hit = self._pres.get(id(module))
        if hit is not None:
            return hit[1]
        with self._lock:
            hit = self._pres.get(id(module))
            if hit is not None:
                return hit[1]
            try:
                pre = self._linker_locked().instantiate_pre(module)
            except wasmtime.WasmtimeError as exc:
                raise ExecutionError(
                    ErrorCode.SKILL_CRASHED,
                    f"module cannot be linked: {str(exc).splitlines()[0][:200]}",
                    detail=str(exc)[:2000],
                ) from None
            self._pres[id(module)] = (module, pre)
            return pre
