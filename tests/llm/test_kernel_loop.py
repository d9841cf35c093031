"""The loop with a real Kernel (native skills, a guard plugin) and the SDK on a local server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bastion import (
    GuardAction,
    GuardDecision,
    Kernel,
    hookimpl,
    load_policy,
    native_skill,
)
from bastion.agent import Agent, ToolHost
from bastion.models import AnthropicModel
from bastion.tokens import tool_pairs_intact
from tests.approvers import RecordingApprover
from tests.llm.fake_anthropic import FakeAnthropic, Reply, text, tool_use

SCHEMA = {
    "type": "object",
    "properties": {"text": {"type": "string"}},
    "required": ["text"],
    "additionalProperties": False,
}


@native_skill(
    name="shout", version="1.0.0", description="Upper-case the text.", input_schema=SCHEMA
)
def shout(text: str) -> dict[str, Any]:
    return {"text": text.upper()}


@native_skill(
    name="crash", version="1.0.0", description="Always fails.", input_schema={"type": "object"}
)
def crash() -> None:
    raise ValueError("kaput in /home/someone/secret/path.py")


@native_skill(
    name="hidden",
    version="1.0.0",
    description="Disabled by policy.",
    input_schema={"type": "object"},
)
def hidden() -> str:
    return "must not run"


class Skills:
    @hookimpl
    def bastion_skills(self) -> list[Any]:
        return [shout, crash, hidden]


class NeedsApproval:
    @hookimpl
    def bastion_guard(self, skill: Any, arguments: Any, grant: Any, context: Any) -> Any:
        if arguments.get("text") == "launch":
            return GuardDecision(GuardAction.APPROVE, "launching needs a person", rule="t")
        return None


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Kernel]:
    monkeypatch.setenv("BASTION_LOAD_PLUGINS", "")
    pol = load_policy(
        text=f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n[skills.hidden]\nenabled = false\n'
    )
    k = Kernel(pol, plugins=[Skills(), NeedsApproval()], entry_points=False)
    yield k
    k.close()


def claude(fake: FakeAnthropic) -> AnthropicModel:
    return AnthropicModel("claude-sonnet-5-5", api_key="k", base_url=fake.base_url)


def blocks(fake: FakeAnthropic, request: int) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = fake.requests[request].body["messages"][-1]["content"]
    return content


def test_kernel_is_a_tool_host(kernel: Kernel) -> None:
    assert isinstance(kernel, ToolHost)


def test_tools_success_failure_and_order(kernel: Kernel, fake: FakeAnthropic) -> None:
    fake.script(
        Reply(
            [
                tool_use("shout", {"text": "a"}, "c1"),
                tool_use("crash", {}, "c2"),
                tool_use("shout", {"text": "b"}, "c3"),
                tool_use("hidden", {}, "c4"),
            ]
        ),
        Reply([text("done")]),
    )
    run = Agent(kernel, model=claude(fake)).run("go")
    assert run.stop_reason == "end_turn"
    offered = [t["name"] for t in fake.requests[0].body["tools"]]
    assert offered == [t.name for t in kernel.tools()] and "hidden" not in offered
    res = blocks(fake, 1)
    assert [b["tool_use_id"] for b in res] == ["c1", "c2", "c3", "c4"]
    assert res[0] == {"type": "tool_result", "tool_use_id": "c1", "content": '{"text": "A"}'}
    assert res[2]["content"] == '{"text": "B"}'
    assert res[1]["is_error"] is True and res[1]["content"].startswith("SKILL_ERROR: ")
    assert "/home/someone" not in res[1]["content"]
    assert res[3]["is_error"] is True and res[3]["content"].startswith("NOT_FOUND: ")
    assert tool_pairs_intact(run.messages)


def test_invalid_input_is_reported(kernel: Kernel, fake: FakeAnthropic) -> None:
    fake.script(Reply([tool_use("shout", {"txt": "a"}, "c1")]), Reply([text("sorry")]))
    Agent(kernel, model=claude(fake)).run("go")
    (res,) = blocks(fake, 1)
    assert res["is_error"] and res["content"].startswith("INVALID_INPUT: ")


@pytest.mark.parametrize("answer", [False, True])
def test_approval_callback(kernel: Kernel, fake: FakeAnthropic, answer: bool) -> None:
    person = RecordingApprover(answer)
    fake.script(Reply([tool_use("shout", {"text": "launch"}, "c1")]), Reply([text("ok")]))
    Agent(kernel, model=claude(fake), approver=person).run("launch it")
    assert [r.skill for r in person.asked] == ["shout"]
    (res,) = blocks(fake, 1)
    if answer:
        assert res == {"type": "tool_result", "tool_use_id": "c1", "content": '{"text": "LAUNCH"}'}
    else:
        assert res["is_error"] and res["content"].startswith("APPROVAL_REQUIRED: ")
