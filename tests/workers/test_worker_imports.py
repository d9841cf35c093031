"""What a worker imports for a Python hello (a regression guard, not a timing): neither
structlog nor pydantic, and in ``bastion run``'s early worker not the HTTP stack either (~100 ms
of its start), while a pool's worker makes the HTTP stack at start so no call pays it; the HTTP
stack, imported by an early worker's first call that makes a request, loads no extension module
after the OS limits; and an early worker (``prespawn``) whose guess the hello contradicts starts
again and still serves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bastion.sandbox.workers import prespawn
from tests.workers.conftest import MakePool, MakeRequest

MODULES_ENTRY = (str(Path(__file__).resolve().parent / "modules_worker.py"),)
HELLO = "def run(name: str = 'x') -> dict:\n    return {'hi': name}\n"
HTTP_STACK = ("httpx", "httpcore", "h11", "bastion.sandbox.hostnet")
NOT_FOR_A_HELLO = (*HTTP_STACK, "structlog", "pydantic")


@pytest.fixture
def no_early_worker() -> Iterator[None]:
    yield
    prespawn.discard()


def _heavy(modules: list[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in NOT_FOR_A_HELLO or m in NOT_FOR_A_HELLO)


@pytest.mark.parametrize("early", [False, True], ids=["spawned", "prespawned"])
def test_a_python_hello_imports_no_logging_or_pydantic_and_early_workers_no_http(
    make_pool: MakePool,
    pyskill: Callable[[str, str], Path],
    request_for: MakeRequest,
    no_early_worker: None,
    early: bool,
) -> None:
    pool = make_pool(entry=MODULES_ENTRY)
    if early:
        prespawn.prespawn(MODULES_ENTRY)
    assert pool.run(request_for(pyskill("hello", HELLO))) == b'{"hi": "x"}'
    modules = json.loads(pool.run(request_for(Path("modules"), runtime="modules")))
    assert "bastion.sandbox.python_exec" in modules  # the list is the worker's own
    if early:  # bastion run's early worker: nothing a hello does not need
        assert _heavy(modules) == []
    else:  # a pool's worker made its HTTP stack at start, so no call's deadline pays it
        assert {"httpx", "bastion.sandbox.hostnet"} <= set(modules)
        assert [m for m in _heavy(modules) if m.split(".")[0] in ("structlog", "pydantic")] == []


def test_an_early_worker_whose_guess_is_wrong_starts_again_and_serves(
    make_pool: MakePool,
    pyskill: Callable[[str, str], Path],
    request_for: MakeRequest,
    no_early_worker: None,
) -> None:
    # Memory beyond the pooling allocator's slot: the hello asks for an engine without it,
    # which the early worker (pooling, guessed before the hello) cannot become.
    pool = make_pool(max_memory_mb=4096)
    prespawn.prespawn(pool.settings.entry)
    early = prespawn._ready[pool.settings.entry][0].pid
    assert pool.run(request_for(pyskill("hello", HELLO))) == b'{"hi": "x"}'
    assert pool.pids() == [early]  # the same process, started again with the hello
    cmdline = Path(f"/proc/{early}/cmdline").read_bytes().split(b"\0")
    assert b"--hello-fd" in cmdline  # the hello went through an anonymous file, not argv
    assert not any(str(pool.cache_root).encode() in arg for arg in cmdline)
    (report,) = pool.reports()
    assert report["pooling"] is False
    assert report["limits"]["seccomp"] is True


def test_the_http_stack_loads_no_extension_module_after_the_os_limits() -> None:
    # Landlock keeps the Python installation readable, not /lib: an extension module first
    # loaded by a call (after the limits) could not load the shared library it links.
    code = (
        "import json, sys\n"
        "from bastion.sandbox.workers.entry import _import_early\n"
        "_import_early()\n"
        "def ext():\n"
        "    return {n for n, m in list(sys.modules.items())\n"
        "            if str(getattr(m, '__file__', '') or '').endswith('.so')}\n"
        "before = ext()\n"
        "import bastion.sandbox.hostnet\n"
        "print(json.dumps({'new': sorted(ext() - before), 'http': 'httpx' in sys.modules}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )  # fmt: skip
    got = json.loads(out.stdout)
    assert got["http"] is True
    assert got["new"] == []
