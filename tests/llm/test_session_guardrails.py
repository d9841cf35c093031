"""Session-scoped guardrails apply to every run: an Agent run and a one-shot ``bastion chat``
without a named session are a session of their own (the lethal-trifecta preset's session rule).

The attack: read private data, fetch untrusted content, then make another outbound call, all in
one run that names no session. Before the fix such a run had no session at all and the
``trifecta_session`` rule never matched.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bastion import InvocationContext, Kernel, hookimpl, load_policy, native_skill
from bastion.agent import Agent
from bastion.models import AnthropicModel
from tests.approvers import RecordingApprover
from tests.llm.fake_anthropic import FakeAnthropic, Reply, text, tool_use
from tests.sitebuilder import SiteBuilder

OBJ = {"type": "object"}


@native_skill(
    name="read_notes",
    version="1.0.0",
    description="Reads private notes.",
    input_schema=OBJ,
    permissions={"filesystem": [{"path": "/notes", "access": "read"}]},
)
def read_notes() -> str:
    return "the private notes"


@native_skill(
    name="fetch_page",
    version="1.0.0",
    description="Fetches a page.",
    input_schema=OBJ,
    permissions={"network": ["https://api.example.com"]},
)
def fetch_page(url: str = "https://api.example.com/") -> str:
    return "untrusted page"


class Skills:
    @hookimpl
    def bastion_skills(self) -> list[Any]:
        return [read_notes, fetch_page]


def _policy(tmp_path: Path) -> str:
    notes = tmp_path / "notes"
    notes.mkdir(exist_ok=True)
    return (
        'presets = ["lethal-trifecta"]\n'
        '[network]\nallow = ["https://api.example.com"]\n'
        f'[[mounts]]\nguest = "/notes"\nhost = "{notes}"\naccess = "read"\n'
        f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n'
    )


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Kernel]:
    monkeypatch.setenv("BASTION_LOAD_PLUGINS", "")
    k = Kernel(load_policy(text=_policy(tmp_path)), plugins=[Skills()], entry_points=False)
    yield k
    k.close()


def _script(fake: FakeAnthropic) -> None:
    # One tool call per turn, so the order is fixed: private data, untrusted content, way out.
    fake.script(
        Reply([tool_use("read_notes", {}, "c1")]),
        Reply([tool_use("fetch_page", {}, "c2")]),
        Reply([tool_use("fetch_page", {"url": "https://api.example.com/out?d=notes"}, "c3")]),
        Reply([text("done")]),
    )


def _result(fake: FakeAnthropic, request: int) -> dict[str, Any]:
    content: list[dict[str, Any]] = fake.requests[request].body["messages"][-1]["content"]
    return content[0]


@pytest.mark.parametrize(
    "context",
    [None, InvocationContext(caller="app")],
    ids=["no-context", "context-without-session"],
)
def test_an_agent_run_without_a_named_session_is_its_own_session(
    kernel: Kernel, fake: FakeAnthropic, context: InvocationContext | None
) -> None:
    _script(fake)
    person = RecordingApprover(False)
    model = AnthropicModel("claude-sonnet-5-5", api_key="k", base_url=fake.base_url)
    Agent(kernel, model=model, approver=person, context=context).run("go")
    assert "is_error" not in _result(fake, 1) and "is_error" not in _result(fake, 2)
    third = _result(fake, 3)
    assert third["is_error"] is True
    assert third["content"].startswith("APPROVAL_REQUIRED: ") and "session" in third["content"]
    assert [r.skill for r in person.asked] == ["fetch_page"]


def test_two_agents_are_two_sessions(kernel: Kernel, fake: FakeAnthropic) -> None:
    """The fresh session is per conversation: another Agent starts clean."""
    model = AnthropicModel("claude-sonnet-5-5", api_key="k", base_url=fake.base_url)
    fake.script(
        Reply([tool_use("read_notes", {}, "c1")]),
        Reply([tool_use("fetch_page", {}, "c2")]),
        Reply([text("done")]),
        Reply([tool_use("fetch_page", {}, "c3")]),
        Reply([text("done")]),
    )
    first = Agent(kernel, model=model, approver=RecordingApprover(False))
    first.run("go")
    second = Agent(kernel, model=model, approver=RecordingApprover(False))
    second.run("go")
    assert first.context.session != second.context.session
    assert "is_error" not in _result(fake, 4)


def test_a_one_shot_chat_is_a_session(tmp_path: Path, fake: FakeAnthropic) -> None:
    site = SiteBuilder(tmp_path / "site")
    site.plugin(
        "trifecta-test-plugin",
        "trifecta_test_plugin",
        """
        from bastion import hookimpl, native_skill

        @native_skill(name="read_notes", version="1.0.0", description="Reads notes.",
                      input_schema={"type": "object"},
                      permissions={"filesystem": [{"path": "/notes", "access": "read"}]})
        def read_notes():
            return "the private notes"

        @native_skill(name="fetch_page", version="1.0.0", description="Fetches.",
                      input_schema={"type": "object"},
                      permissions={"network": ["https://api.example.com"]})
        def fetch_page(url="https://api.example.com/"):
            return "untrusted page"

        @hookimpl
        def bastion_skills():
            return [read_notes, fetch_page]
        """,
    )
    policy = tmp_path / "bastion.toml"
    policy.write_text(_policy(tmp_path) + '[plugins]\ntrusted = ["trifecta-test-plugin"]\n')
    env = dict(
        os.environ,
        PYTHONPATH=str(site.root),
        BASTION_LOAD_PLUGINS="trifecta-test-plugin",
        BASTION_POLICY=str(policy),
        ANTHROPIC_API_KEY="sk-test-key",
        ANTHROPIC_BASE_URL=fake.base_url,
        BASTION_CONVERSATIONS=str(tmp_path / "conv.sqlite3"),
    )
    _script(fake)
    p = subprocess.run(
        [sys.executable, "-m", "bastion.cli", "chat", "summarise my notes"],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert "<- read_notes: ok" in p.stderr
    assert p.stderr.count("<- fetch_page: ok") == 1
    assert "<- fetch_page: APPROVAL_REQUIRED" in p.stderr
    third = _result(fake, 3)
    assert third["is_error"] is True and "lethal trifecta" in third["content"]
