"""Worker-pool fixtures: real worker processes, real skills (Python runner, WASI modules)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from bastion.cachedir import default_cache_root
from bastion.executor import Capabilities, ExecutionRequest, Limits
from bastion.sandbox.python_exec import PythonExecutor
from bastion.sandbox.runner_build import load_runner
from bastion.sandbox.wasi_module import WasiModuleExecutor
from bastion.sandbox.workers import WorkerPool, WorkerSettings

ATTACK_ENTRY = Path(__file__).resolve().parent / "attack_worker.py"

MakePool = Callable[..., WorkerPool]
MakeRequest = Callable[..., ExecutionRequest]


class Audit:
    """Collects audit events a call produced (the kernel's sink, in small)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, fields: Any) -> None:
        self.events.append((kind, dict(fields)))


@pytest.fixture(scope="session")
def runner_loaded() -> None:
    load_runner()  # build + compile once, before any deadline starts


@pytest.fixture
def skills_dir(tmp_path: Path) -> Path:
    d = tmp_path / "skills"
    d.mkdir()
    return d


@pytest.fixture
def pyskill(skills_dir: Path, runner_loaded: None) -> Callable[[str, str], Path]:
    """``pyskill(name, source)``: a Python skill file, checked by the in-process executor."""
    ex = PythonExecutor()

    def make(name: str, source: str) -> Path:
        path = skills_dir / f"{name}.py"
        path.write_text(source)
        ex.prepare(path)
        return path

    return make


@pytest.fixture
def wasm_prepared() -> Callable[[Path], Path]:
    """Compile a module into the cache (the kernel's job) so workers can load it."""
    ex = WasiModuleExecutor()

    def prep(path: Path) -> Path:
        ex.prepare(path)
        return path

    return prep


@pytest.fixture
def make_pool(skills_dir: Path) -> Iterator[MakePool]:
    """``make_pool(count=1, attack=False, **settings)``: a pool closed after the test."""
    pools: list[WorkerPool] = []

    def make(count: int = 1, *, attack: bool = False, **kw: Any) -> WorkerPool:
        kw.setdefault("read_paths", (str(skills_dir),))
        if attack:
            kw["entry"] = (str(ATTACK_ENTRY),)
        pool = WorkerPool(WorkerSettings(count=count, **kw), cache_root=default_cache_root())
        pools.append(pool)
        return pool

    yield make
    for p in pools:
        p.close()


@pytest.fixture
def request_for() -> MakeRequest:
    """``request_for(entry, input, runtime=..., timeout_ms=..., **caps)``."""

    def make(
        entry: Path,
        inp: Any = None,
        *,
        runtime: str = "python",
        timeout_ms: int = 5000,
        audit: Any = None,
        cancel: Any = None,
        caps: Capabilities | None = None,
        skill: str = "t",
    ) -> ExecutionRequest:
        return ExecutionRequest(
            skill=skill,
            version="1.0.0",
            runtime=runtime,
            entry=entry,
            folder=entry.parent,
            input=inp,
            input_json=json.dumps(inp if inp is not None else {}),
            caps=caps or Capabilities(),
            limits=Limits(timeout_ms=timeout_ms),
            deadline=time.monotonic() + timeout_ms / 1000,
            invocation_id="inv-w",
            logger=structlog.get_logger("test.workers"),
            audit=audit or Audit(),
            cancel=cancel,
        )

    return make


def children_of(pid: int) -> list[tuple[int, str]]:
    """``(pid, state)`` of every live process whose parent is ``pid`` (Z = zombie)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2 :].split()
        if int(rest[1]) == pid:
            out.append((int(d), rest[0]))
    return out


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))
