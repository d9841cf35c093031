"""Authoring tests: first-party packs and packs built from the template, run through the real
kernel and the real Python sandbox (the runner is built once per cache, then reused)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bastion.kernel import Kernel
from bastion.policy import load_policy
from bastion.result import ToolResult

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "plugins"
BADPACK = Path(__file__).resolve().parent / "badpack"
PACKS = {
    "data": PLUGINS / "bastion-pack-data" / "bastion_pack_data",
    "files": PLUGINS / "bastion-pack-files" / "bastion_pack_files",
    "web": PLUGINS / "bastion-pack-web" / "bastion_pack_web",
}


@pytest.fixture(scope="session")
def runner_ready() -> None:
    """Build and compile the Python runner before any invocation's deadline starts."""
    from bastion.sandbox.runner_build import load_runner

    load_runner()


class PackRunner:
    """One pack folder under a policy written by the test; ``call`` invokes a skill."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    def call(self, skill: str, **arguments: Any) -> ToolResult:
        return self.kernel.invoke(skill, arguments)

    def ok(self, skill: str, **arguments: Any) -> Any:
        result = self.call(skill, **arguments)
        assert result.ok, result.error
        return result.output

    def error(self, skill: str, **arguments: Any) -> tuple[str, str]:
        result = self.call(skill, **arguments)
        assert not result.ok, f"expected a failure, got {result.output!r}"
        assert result.error is not None
        return result.error.code, result.error.message


@pytest.fixture
def pack_runner(tmp_path: Path, runner_ready: None) -> Iterator[Callable[..., PackRunner]]:
    """``pack_runner("data", policy_text)``: a kernel over one first-party pack folder only."""
    kernels: list[Kernel] = []

    def make(pack: str, policy: str = "", environ: dict[str, str] | None = None) -> PackRunner:
        text = policy + f'\n[audit]\npath = "{(tmp_path / "audit.jsonl").as_posix()}"\n'
        kernel = Kernel(
            load_policy(text=text),
            pack_paths=[PACKS[pack]],
            entry_points=False,
            environ=environ or {},
        )
        kernels.append(kernel)
        assert not kernel.problems, kernel.problems
        return PackRunner(kernel)

    yield make
    for k in kernels:
        k.close()
