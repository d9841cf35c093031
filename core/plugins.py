"""The pluggy plugin manager and the built-in plugin that registers the core executors.

Core features are plugins: the ``native`` executor and the sandbox executors (``wasm``,
``component``, ``python``) are registered through ``bastion_executors`` like anyone's. The
sandbox executors are imported lazily, so listing skills never loads wasmtime.
"""

from __future__ import annotations

import importlib
import threading
from pathlib import Path
from typing import Any

import pluggy

from . import hookspecs
from .executor import ExecutionRequest, Executor, JSONValue
from .hookspecs import hookimpl
from .native import NativeExecutor

__all__ = ["LazyExecutor", "builtin_plugin", "make_plugin_manager"]


class LazyExecutor:
    """An executor imported and built on first use (keeps wasmtime out of cheap commands).

    ``stager`` (``"module:function"``), when given, is the executor's ``stage`` as a function
    that needs no executor: a kernel whose workers run the calls stages through it without
    importing the executor (and wasmtime) at all."""

    def __init__(
        self, runtime: str, target: str, *, stager: str | None = None, **kwargs: Any
    ) -> None:
        self.runtime = runtime
        self._target = target
        self._stager = stager
        self._kwargs = kwargs
        self._impl: Executor | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._impl is not None

    def _get(self) -> Executor:
        impl = self._impl
        if impl is not None:
            return impl
        with self._lock:
            if self._impl is None:
                module, _, attr = self._target.partition(":")
                cls = getattr(importlib.import_module(module), attr)
                self._impl = cls(**self._kwargs)
            return self._impl

    def prepare(self, entry: Path) -> None:
        self._get().prepare(entry)

    def stage(self, entry: Path) -> bool:
        """The executor's ``stage`` (True: a worker can load what ``entry`` needs without this
        process loading it), or False when it has none (then ``prepare``)."""
        if self._impl is None and self._stager is not None:
            module, _, attr = self._stager.partition(":")
            return bool(getattr(importlib.import_module(module), attr)(entry))
        stage = getattr(self._get(), "stage", None)
        return bool(stage(entry)) if callable(stage) else False

    def execute(self, request: ExecutionRequest) -> bytes | JSONValue:
        return self._get().execute(request)

    def close(self) -> None:
        with self._lock:
            if self._impl is not None:
                self._impl.close()
                self._impl = None


class _Builtins:
    """The built-in plugin: the executors every installation has."""

    @hookimpl
    def bastion_executors(self) -> list[Executor]:
        return [
            NativeExecutor(),
            LazyExecutor("wasm", "bastion.sandbox.wasi_module:WasiModuleExecutor"),
            LazyExecutor("component", "bastion.sandbox.component_exec:ComponentExecutor"),
            LazyExecutor(
                "python",
                "bastion.sandbox.python_exec:PythonExecutor",
                stager="bastion.sandbox.python_stage:stage",
            ),
        ]


builtin_plugin = _Builtins


def make_plugin_manager(extra: list[object] | None = None) -> pluggy.PluginManager:
    """A plugin manager with Bastion's hookspecs, the built-ins and ``extra`` plugins."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(_Builtins(), name="bastion.builtins")
    for i, plugin in enumerate(extra or []):
        pm.register(plugin, name=f"bastion.embedded.{i}")
    return pm
