"""Python-skill fixtures: the runner (built once per cache), skills written to files, requests."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from bastion.executor import Capabilities, ExecutionRequest, Limits
from bastion.sandbox.cache import default_cache
from bastion.sandbox.component_exec import ComponentExecutor
from bastion.sandbox.python_exec import PythonExecutor
from bastion.sandbox.runner_build import GUEST_DIR, load_runner

MakeSkill = Callable[..., ExecutionRequest]


class AuditLog:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, fields: Any) -> None:
        self.events.append((kind, dict(fields)))


@pytest.fixture(scope="session")
def python_executor() -> Iterator[PythonExecutor]:
    """One executor for the session; the runner is built/compiled once, then cached."""
    load_runner()  # build + compile before any request's deadline starts
    ex = PythonExecutor()
    yield ex
    ex.close()


def _request(
    entry: Path, inp: Any, *, runtime: str, caps: Capabilities, limits: Limits, audit: Any
) -> ExecutionRequest:
    return ExecutionRequest(
        skill="t",
        version="0.1.0",
        runtime=runtime,
        entry=entry,
        folder=entry.parent,
        input=inp,
        input_json=json.dumps(inp),
        caps=caps,
        limits=limits,
        deadline=time.monotonic() + limits.timeout_ms / 1000,
        invocation_id="inv-1",
        logger=structlog.get_logger("test"),
        audit=audit,
    )


def folder_request(folder: Path, inp: Any, *, entry: str = "skill.py") -> ExecutionRequest:
    """A request for the skill folder ``folder`` (its entry ``entry``), no grants."""
    req = _request(
        folder / entry,
        inp,
        runtime="python",
        caps=Capabilities(),
        limits=Limits(timeout_ms=5000),
        audit=AuditLog(),
    )
    return dataclasses.replace(req, folder=folder)


@pytest.fixture
def skill(tmp_path: Path) -> MakeSkill:
    """``skill(source, input, caps=..., limits=...)``: write ``skill.py``, build the request."""

    def make(
        source: str,
        inp: Any = None,
        *,
        caps: Capabilities | None = None,
        limits: Limits | None = None,
        audit: Any = None,
        name: str = "skill.py",
    ) -> ExecutionRequest:
        entry = tmp_path / name
        entry.write_text(source)
        return _request(
            entry,
            {} if inp is None else inp,
            runtime="python",
            caps=caps or Capabilities(),
            limits=limits or Limits(timeout_ms=5000),
            audit=audit or AuditLog(),
        )

    return make


# -- a tiny component of the `skill` world, built from Python with componentize-py ------------

ECHO_APP = """
import json
import wit_world
from componentize_py_types import Err
from wit_world.imports import host

class WitWorld(wit_world.WitWorld):
    def run(self, input: str) -> str:
        args = json.loads(input)
        mode = args.get("mode", "echo")
        if mode == "fail":
            raise Err("boom: " + str(args.get("why", "")))
        if mode == "loop":
            while True:
                pass
        if mode == "secret":
            return json.dumps({"value": host.secret(args["name"])})
        if mode == "big":
            return json.dumps("x" * args["n"])
        if mode == "http":
            req = host.HttpRequest(
                method="GET", url=args["url"], headers=[], body_b64=None, timeout_ms=None
            )
            try:
                r = host.http(req)
            except Err as err:
                return json.dumps({"error": str(getattr(err.value, "value", err.value))})
            return json.dumps({"status": r.status, "body_b64": r.body_b64})
        host.log(host.Level.INFO, "echo called")
        return json.dumps({"echo": args})
"""


@pytest.fixture(scope="session")
def echo_component() -> Path:
    """The echo component (``skill`` world), built once and kept in the test cache."""
    key = hashlib.sha256(
        ECHO_APP.encode() + (GUEST_DIR / "wit" / "bastion.wit").read_bytes()
    ).hexdigest()[:24]
    folder = default_cache().root / "test-components"
    folder.mkdir(mode=0o700, exist_ok=True)
    out = folder / f"echo-{key}.wasm"
    if not out.is_file():
        src = folder / f"src-{key}"
        src.mkdir(exist_ok=True)
        (src / "echo_app.py").write_text(ECHO_APP)
        env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
        launcher = (
            "import sys; from componentize_py import script; "
            "sys.argv[0] = 'componentize-py'; sys.exit(script())"
        )
        tmp = out.with_suffix(".tmp")
        subprocess.run(
            [
                sys.executable,
                "-c",
                launcher,
                "-q",
                "-d",
                str(GUEST_DIR / "wit"),
                "-w",
                "skill",
                "componentize",
                "-p",
                str(src),
                "echo_app",
                "-o",
                str(tmp),
            ],
            check=True,
            cwd=src,
            env=env,
            capture_output=True,
            timeout=600,
        )
        tmp.replace(out)
    return out


@pytest.fixture(scope="session")
def component_executor() -> Iterator[ComponentExecutor]:
    ex = ComponentExecutor()
    yield ex
    ex.close()


@pytest.fixture
def component_request(echo_component: Path) -> Callable[..., ExecutionRequest]:
    def make(
        inp: Any, *, caps: Capabilities | None = None, limits: Limits | None = None
    ) -> ExecutionRequest:
        return _request(
            echo_component,
            inp,
            runtime="component",
            caps=caps or Capabilities(),
            limits=limits or Limits(timeout_ms=5000),
            audit=AuditLog(),
        )

    return make
