"""A log sink that fails never takes a call down: a closed stderr, a raising structlog processor.

Found when an in-process CLI test left structlog writing to a captured stderr that pytest had
closed: every later ``log.exception`` raised, and an Agent run whose tool host failed waited
forever for a result that never came.
"""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from bastion.agent import Agent
from bastion.logs import configure_logging
from bastion.models import ScriptedModel, ScriptedTurn
from bastion.result import InvocationContext, ToolResult
from tests.llm.host import FunctionHost


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def test_lines_go_to_the_stderr_of_the_moment(monkeypatch: pytest.MonkeyPatch) -> None:
    configure_logging(level="warning")
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    structlog.get_logger("t").warning("to_first")
    monkeypatch.setattr(sys, "stderr", second)
    structlog.get_logger("t").warning("to_second")
    assert "to_first" in first.getvalue() and "to_second" not in first.getvalue()
    assert "to_second" in second.getvalue()


def test_a_closed_stderr_loses_the_line_not_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    configure_logging(level="warning")
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stderr", closed)
    structlog.get_logger("t").error("nowhere_to_go")  # must not raise
    monkeypatch.setattr(sys, "stderr", None)
    structlog.get_logger("t").error("no_stream_at_all")


class _Broken(FunctionHost):
    async def ainvoke(
        self,
        name: str,
        arguments: Any,
        *,
        context: InvocationContext | None = None,
        approver: Any = None,
    ) -> ToolResult:
        raise RuntimeError("the host fell over")


def test_an_agent_run_ends_even_when_logging_the_host_failure_raises() -> None:
    def exploding(_logger: Any, _name: str, event: Any) -> Any:
        # An embedder's exception formatter with a bug: it fails on every record with a traceback.
        if event.get("exc_info"):
            raise OSError("the exception formatter is broken")
        raise structlog.DropEvent

    structlog.configure(processors=[exploding])
    host = _Broken().add("x", lambda: 1)
    model = ScriptedModel([ScriptedTurn(tool_calls=[("x", {})]), "done"])
    outcome: list[Any] = []
    worker = threading.Thread(
        target=lambda: outcome.append(Agent(host, model=model).run("go")), daemon=True
    )
    worker.start()
    worker.join(60)  # a liveness guard, not a timing assertion: before the fix this never ended
    assert outcome, "the Agent run never finished"
    blocks = [b for b in outcome[0].messages[2]["content"] if b["type"] == "tool_result"]
    assert blocks[0]["is_error"] and blocks[0]["content"].startswith("INTERNAL: ")
