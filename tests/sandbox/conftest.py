"""Sandbox fixtures: built guests, a private compile cache, requests, the wasm executor."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from bastion.executor import Capabilities, ExecutionRequest, Limits
from bastion.sandbox.cache import CompileCache
from bastion.sandbox.wasi_module import WasiModuleExecutor
from tests.sandbox.guestbuild import GUESTS, build_c, build_wat

MakeRequest = Callable[..., ExecutionRequest]


@pytest.fixture(scope="session")
def guest_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built guests as ``.wasm`` files (outside the repository)."""
    return tmp_path_factory.mktemp("guests")


@pytest.fixture(scope="session")
def guest(guest_dir: Path) -> Callable[[str], Path]:
    """``guest("echo.c")`` / ``guest("loop.wat")``: path of the built module."""
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            src = GUESTS / name
            data = build_c(src) if name.endswith(".c") else build_wat(src)
            out = guest_dir / (Path(name).stem + ".wasm")
            out.write_bytes(data)
            built[name] = out
        return built[name]

    return get


@pytest.fixture
def wat_file(tmp_path: Path) -> Callable[[str], Path]:
    """Write WAT text to a ``.wasm`` file in the test's tmp dir."""
    counter = iter(range(10_000))

    def make(text: str) -> Path:
        out = tmp_path / f"inline{next(counter)}.wasm"
        out.write_bytes(build_wat(text))
        return out

    return make


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compiled")


@pytest.fixture(scope="session")
def executor(cache_root: Path) -> Iterator[WasiModuleExecutor]:
    with WasiModuleExecutor(CompileCache(cache_root)) as ex:
        yield ex


class AuditLog:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, fields: Any) -> None:
        self.events.append((kind, dict(fields)))


@pytest.fixture
def make_request() -> MakeRequest:
    """Build an ``ExecutionRequest`` for a module path with the given limits and caps."""

    def make(
        entry: Path,
        input_json: str = "{}",
        *,
        timeout_ms: int = 2000,
        memory_mb: int = 32,
        output_kb: int = 64,
        skill: str = "probe",
        caps: Capabilities | None = None,
        audit: Any = None,
    ) -> ExecutionRequest:
        return ExecutionRequest(
            skill=skill,
            version="1.0.0",
            runtime="wasm",
            entry=entry,
            folder=entry.parent,
            input=None,
            input_json=input_json,
            caps=caps or Capabilities(),
            limits=Limits(timeout_ms=timeout_ms, memory_mb=memory_mb, output_kb=output_kb),
            deadline=time.monotonic() + timeout_ms / 1000,
            invocation_id="inv-test",
            logger=structlog.get_logger("test"),
            audit=audit or AuditLog(),
        )

    return make
