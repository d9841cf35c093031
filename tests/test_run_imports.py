"""What ``bastion run`` imports in the kernel's process for a Python hello (a regression guard,
not a timing): none of the agent, model, MCP, HTTP-server or Redis stacks, no HTTP client, and
no structlog when nothing is logged; no jsonschema when the input settles on the plain schema
check; and in process mode no wasmtime at all (the worker loads and runs the skill; the kernel
only names the cache entry)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

NOT_FOR_RUN = (
    "anthropic", "tiktoken", "mcp", "starlette", "uvicorn", "redis", "httpx", "structlog",
    "bastion.agent", "bastion.models", "bastion.serve", "bastion.chat",
    "jsonschema", "referencing", "bastion.schemabound",
)  # fmt: skip
NOT_FOR_PROCESS_RUN = ("wasmtime", "bastion.sandbox.python_exec", "bastion.sandbox.store")
"""What only the worker process needs when the skill runs there."""
HELLO_PY = (
    'def run(name: str = "world") -> str:\n    """Say hello."""\n    return f"Hello, {name}!"\n'
)
WRAPPER = (
    "import json, sys\n"
    "from bastion.cli import main\n"
    "rc = main(sys.argv[2:])\n"
    "sys.stdout.flush()\n"
    "with open(sys.argv[1], 'w') as f:\n"
    "    json.dump(sorted(sys.modules), f)\n"
    "sys.exit(rc)\n"
)


def _pack(root: Path) -> Path:
    (root / "hello").mkdir(parents=True)
    (root / "bastion-pack.toml").write_text(
        'name = "imports"\nversion = "1.0.0"\nskills = ["hello"]\n'
    )
    (root / "hello" / "skill.toml").write_text(
        'name = "hello"\nversion = "1.0.0"\ndescription = "Say hello."\n'
        'runtime = "python"\nentry = "skill.py"\n'
    )
    (root / "hello" / "skill.py").write_text(HELLO_PY)
    return root


@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_run_hello_imports_none_of_the_other_commands_stacks(
    tmp_path: Path, isolation: str
) -> None:
    pack, listing = _pack(tmp_path / "pack"), tmp_path / "modules.json"
    policy = tmp_path / "bastion.toml"
    policy.write_text(f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n')
    cmd = [sys.executable, "-c", WRAPPER, str(listing), "--policy", str(policy)]
    cmd += ["--pack", str(pack), "run", "hello", "--input", "{}", "--json"]
    # The guard is about a warm run: a first run on a cold cache builds and compiles the runner
    # and fills the schema and manifest-check memos, which takes wasmtime and jsonschema.
    warm = subprocess.run([*cmd, "--isolation", isolation], capture_output=True, text=True)
    assert warm.returncode == 0, warm.stderr
    proc = subprocess.run([*cmd, "--isolation", isolation], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["output"] == "Hello, world!"
    # wasmtime imported on first use is torn down first at exit: its objects go before it.
    assert "Exception ignored" not in proc.stderr, proc.stderr[-2000:]
    modules = json.loads(listing.read_text())
    assert "bastion.kernel" in modules  # the list is the run's own
    banned = NOT_FOR_RUN + (NOT_FOR_PROCESS_RUN if isolation == "process" else ())
    heavy = [m for m in modules if any(m == n or m.startswith(n + ".") for n in banned)]
    assert heavy == [], (heavy[:8], proc.stderr[-1500:])
    if isolation == "thread":
        assert "wasmtime" in modules  # the guard's names are real modules of a run
