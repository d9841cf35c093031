"""Cancellation through the kernel: a cancel before the run, and a cancelled ``ainvoke`` task.

The executors' own stop (epoch trap in thread mode, worker kill in process mode) is tested with
real guests beside them; here the kernel's part: the call is refused or waited for, the audit
record says ``CANCELLED``, and the task's ``CancelledError`` comes only once the call stopped.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bastion import Kernel, hookimpl, load_policy, native_skill
from bastion.audit import read_audit

_started = threading.Event()


@native_skill(
    name="nap", version="1.0.0", description="Sleeps a little.", input_schema={"type": "object"}
)
def nap(seconds: float = 0.3) -> str:
    _started.set()
    time.sleep(seconds)
    return "woke"


class _Skills:
    @hookimpl
    def bastion_skills(self) -> list[Any]:
        return [nap]


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("BASTION_LOAD_PLUGINS", "")
    pol = load_policy(text=f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n')
    with Kernel(pol, plugins=[_Skills()]) as k:
        yield k


def _outcomes(kernel: Kernel) -> list[str]:
    kernel.audit.flush()
    path = kernel.audit.path  # type: ignore[union-attr]
    return [r["outcome"] for r in read_audit(path) if r.get("event") == "invoke"]


def test_a_set_cancel_refuses_the_call_before_it_runs(kernel: Kernel) -> None:
    cancel = threading.Event()
    cancel.set()
    _started.clear()
    result = kernel.invoke("nap", {"seconds": 0}, cancel=cancel)
    assert not result.ok and result.error is not None
    assert result.error.code == "CANCELLED" and not result.error.retryable
    assert not _started.is_set()
    assert _outcomes(kernel) == ["CANCELLED"]


def test_an_unset_cancel_changes_nothing(kernel: Kernel) -> None:
    result = kernel.invoke("nap", {"seconds": 0}, cancel=threading.Event())
    assert result.ok and result.output == "woke"


def test_a_cancelled_ainvoke_raises_only_after_the_call_ended(kernel: Kernel) -> None:
    async def scenario() -> None:
        _started.clear()
        task = asyncio.create_task(kernel.ainvoke("nap", {"seconds": 0.3}))
        while not _started.is_set():
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # A native skill cannot be interrupted; what matters is that the task ended only once
        # the call had ended, so its audit record is already written.
        assert _outcomes(kernel) == ["ok"]

    asyncio.run(scenario())
