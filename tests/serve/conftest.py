"""Fixtures for the MCP server tests: a real pack of WASM and Python skills, policies written to
files, and real ``bastion serve`` / ``bastion mcp`` processes driven by the SDK's own client."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.client.stdio import StdioServerParameters

from tests.sandbox.guestbuild import GUESTS, build_c, build_wat

BASTION = str(Path(sys.executable).with_name("bastion"))
ERAS = ["legacy", "2026-07-28"]
"""The two protocol eras every client test runs on: the 2025 handshake and the stateless one."""

ALICE = "alice-token-0123456789abcdef"
"""A reader of tenant acme (its sha256 is in the policy)."""
BOB_ENV = "BASTION_TEST_BOB_TOKEN"
BOB = "bob-token-fedcba9876543210"
"""An admin of tenant beta (the policy names the environment variable holding it)."""
STATE_KEY_ENV = "BASTION_TEST_STATE_KEY"


def _skill(folder: Path, name: str, toml: str, files: dict[str, bytes | str]) -> None:
    d = folder / name
    d.mkdir()
    (d / "skill.toml").write_text(f'name = "{name}"\nversion = "1.0.0"\n{toml}\n')
    for fname, data in files.items():
        if isinstance(data, bytes):
            (d / fname).write_bytes(data)
        else:
            (d / fname).write_text(data)


ADD_PY = '''
def run(a: int, b: int) -> dict:
    """Add two integers."""
    return {"sum": a + b}
'''

SKILLS = ["echo", "add", "spin", "forever", "guarded", "admin_tool", "wants_net"]


@pytest.fixture(scope="session")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pack folder: echo (WASM), add (Python), spin and forever (WASM infinite loops, short
    and long timeout), guarded (needs approval), admin_tool (role-limited), wants_net (denied)."""
    folder = tmp_path_factory.mktemp("serve-pack")
    echo = build_c(GUESTS / "echo.c")
    loop = build_wat(GUESTS / "loop.wat")
    obj = 'input_schema = { type = "object" }'
    wasm = 'runtime = "wasm"\nentry = "skill.wasm"\n'
    _skill(
        folder,
        "echo",
        f'description = "Echo the input."\ntitle = "Echo back"\n{wasm}{obj}\ndeterministic = true',
        {"skill.wasm": echo},
    )
    _skill(
        folder,
        "add",
        'runtime = "python"\nentry = "skill.py"\n'
        'output_schema = { type = "object", required = ["sum"] }',
        {"skill.py": ADD_PY},
    )
    _skill(
        folder,
        "spin",
        f'description = "Loop forever."\n{wasm}{obj}\n[limits]\ntimeout_ms = 300',
        {"skill.wasm": loop},
    )
    _skill(
        folder,
        "forever",
        f'description = "Loop for a long time."\n{wasm}{obj}\n[limits]\ntimeout_ms = 30000',
        {"skill.wasm": loop},
    )
    _skill(
        folder,
        "guarded",
        f'description = "Echo after approval."\n{wasm}{obj}',
        {"skill.wasm": echo},
    )
    _skill(folder, "admin_tool", f'description = "Admins only."\n{wasm}{obj}', {"skill.wasm": echo})
    _skill(
        folder,
        "wants_net",
        f'description = "Asks for a host the policy does not grant."\n{wasm}{obj}\n'
        '[permissions]\nnetwork = ["https://api.example.com"]',
        {"skill.wasm": echo},
    )
    (folder / "bastion-pack.toml").write_text(
        'name = "serve-test"\nversion = "1.0.0"\nskills = ['
        + ", ".join(f'"{s}"' for s in SKILLS)
        + "]\n"
    )
    return folder


def policy_text(tmp: Path, extra: str = "", *, ttl_s: float = 300.0) -> str:
    digest = hashlib.sha256(ALICE.encode()).hexdigest()
    return f"""
[audit]
path = "{(tmp / "audit.jsonl").as_posix()}"

[[guardrails]]
action = "approve"
reason = "it is the guarded skill"
skills = ["guarded"]

[roles.reader]
skills = ["echo", "add", "spin", "forever", "guarded"]

[roles.admin]
skills = ["*"]

[serve]
approval_ttl_s = {ttl_s}
state_key_env = "{STATE_KEY_ENV}"

[[serve.tokens]]
name = "alice"
tenant = "acme"
roles = ["reader"]
sha256 = "{digest}"

[[serve.tokens]]
name = "bob"
tenant = "beta"
roles = ["admin"]
env = "{BOB_ENV}"
{extra}
"""


@pytest.fixture
def policy(tmp_path: Path) -> Callable[..., Path]:
    """``policy(extra="", ttl_s=300)``: write the test policy to a file and return its path."""

    def write(extra: str = "", *, ttl_s: float = 300.0) -> Path:
        path = tmp_path / "bastion.toml"
        path.write_text(policy_text(tmp_path, extra, ttl_s=ttl_s))
        return path

    return write


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env[BOB_ENV] = BOB
    env[STATE_KEY_ENV] = "k" * 40
    env["BASTION_LOAD_PLUGINS"] = ""  # only the test pack: no installed first-party packs
    env.setdefault("BASTION_CACHE_DIR", str(Path.home() / ".cache" / "bastion-tests"))
    return env


def read_audit(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(check: Callable[[], Any], timeout: float = 30.0, step: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy (bounded); return it."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout} s")


def stdio_params(policy_path: Path, pack: Path) -> StdioServerParameters:
    return StdioServerParameters(
        command=BASTION,
        args=["--policy", str(policy_path), "--pack", str(pack), "mcp"],
        env=server_env(),
        cwd=str(policy_path.parent),
    )


@dataclass
class Served:
    """A running ``bastion serve``."""

    proc: subprocess.Popen[str]
    port: int
    policy: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.base + "/mcp"

    @property
    def audit(self) -> Path:
        return self.policy.parent / "audit.jsonl"


@contextmanager
def run_serve(
    policy_path: Path,
    pack: Path,
    *args: str,
    ready: bool = True,
    env: dict[str, str] | None = None,
) -> Iterator[Served]:
    """Start ``bastion serve --port 0``; wait for its port (and ``/readyz`` 200 if ``ready``)."""
    err = policy_path.parent / f"serve-{time.monotonic_ns()}.log"
    with err.open("w") as log:
        proc = subprocess.Popen(
            [
                BASTION,
                "--policy",
                str(policy_path),
                "--pack",
                str(pack),
                "serve",
                "--port",
                "0",
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
            env=env or server_env(),
            cwd=str(policy_path.parent),
        )
    try:

        def port() -> int | None:
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)/mcp", err.read_text())
            if proc.poll() is not None:
                raise AssertionError(f"bastion serve exited: {err.read_text()[-2000:]}")
            return int(m.group(1)) if m else None

        served = Served(proc, wait_for(port, 60), policy_path)
        if ready:
            wait_for(
                lambda: httpx.get(served.base + "/readyz", timeout=30).status_code == 200, 300, 0.2
            )
        yield served
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture(scope="module")
def served(pack: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One ``bastion serve`` for a module's tests that do not change its policy."""
    tmp = tmp_path_factory.mktemp("served")
    path = tmp / "bastion.toml"
    path.write_text(policy_text(tmp))
    with run_serve(path, pack) as s:
        yield s


@pytest.fixture(scope="module")
def stdio_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("stdio")
    path = tmp / "bastion.toml"
    path.write_text(policy_text(tmp))
    return path
