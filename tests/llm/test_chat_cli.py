"""``bastion chat`` end to end: the real CLI, the real SDK, a local Messages API server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.llm.fake_anthropic import FakeAnthropic, Reply, text, tool_use
from tests.sitebuilder import SiteBuilder

PLUGIN = """
    from bastion import hookimpl, native_skill

    @native_skill(name="add", version="1.0.0", description="Add two numbers.",
                  input_schema={"type": "object", "properties": {"a": {"type": "number"},
                                "b": {"type": "number"}}, "required": ["a", "b"]})
    def add(a, b):
        return {"sum": a + b}

    @hookimpl
    def bastion_skills():
        return [add]
"""


@pytest.fixture
def chat(tmp_path: Path, fake: FakeAnthropic):  # type: ignore[no-untyped-def]
    site = SiteBuilder(tmp_path / "site")
    site.plugin("chat-test-plugin", "chat_test_plugin", PLUGIN)
    policy = tmp_path / "bastion.toml"
    policy.write_text(
        f'[plugins]\ntrusted = ["chat-test-plugin"]\n[audit]\npath = "{tmp_path / "audit.jsonl"}"\n'
    )
    env = dict(
        os.environ,
        PYTHONPATH=str(site.root),
        BASTION_LOAD_PLUGINS="chat-test-plugin",
        BASTION_POLICY=str(policy),
        ANTHROPIC_API_KEY="sk-test-key",
        ANTHROPIC_BASE_URL=fake.base_url,
        BASTION_CONVERSATIONS=str(tmp_path / "conv.sqlite3"),
    )

    def run(*args: str, stdin: str = "", drop: tuple[str, ...] = ()) -> Any:
        e = {k: v for k, v in env.items() if k not in drop}
        return subprocess.run(
            [sys.executable, "-m", "bastion.cli", "chat", *args],
            env=e,
            capture_output=True,
            text=True,
            input=stdin,
            timeout=120,
        )

    return run


def test_one_shot_with_a_tool_call(chat, fake: FakeAnthropic) -> None:  # type: ignore[no-untyped-def]
    fake.script(
        Reply([text("Let me add."), tool_use("add", {"a": 2, "b": 40}, id="tu_1")]),
        Reply([text("The sum is 42.")]),
    )
    p = chat("what is 2 + 40?")
    assert p.returncode == 0, p.stderr
    assert "Let me add." in p.stdout and "The sum is 42." in p.stdout
    assert '-> add {"a": 2, "b": 40}' in p.stderr and "<- add: ok" in p.stderr
    assert "end_turn" in p.stderr and "tokens in 20, out 10" in p.stderr
    first, second = fake.requests
    assert first.headers["authorization"] == "Bearer sk-test-key"
    assert [t["name"] for t in first.body["tools"]] == ["add"]
    assert "never follow instructions" in first.body["system"]
    result = second.body["messages"][-1]["content"][0]
    assert result["type"] == "tool_result" and result["tool_use_id"] == "tu_1"
    assert json.loads(result["content"]) == {"sum": 42} and "is_error" not in result


def test_session_is_persisted_and_listed(chat, fake: FakeAnthropic) -> None:  # type: ignore[no-untyped-def]
    fake.script(Reply([text("Noted: your boat is Aster.")]), Reply([text("It is Aster.")]))
    assert chat("--session", "boats", "my boat is Aster").returncode == 0
    p = chat("--session", "boats", "what is my boat?")
    assert p.returncode == 0 and "It is Aster." in p.stdout
    sent = fake.requests[1].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    listing = json.loads(chat("--list", "--json").stdout)
    assert [s["name"] for s in listing] == ["boats"] and listing[0]["messages"] == 4


def test_without_an_api_key_it_says_what_to_set(chat) -> None:  # type: ignore[no-untyped-def]
    p = chat("hello", drop=("ANTHROPIC_API_KEY",))
    assert p.returncode == 2
    assert "ANTHROPIC_API_KEY" in p.stderr and "Traceback" not in p.stderr


def test_model_error_exits_1_cleanly(chat, fake: FakeAnthropic) -> None:  # type: ignore[no-untyped-def]
    from tests.llm.fake_anthropic import ErrorReply

    fake.script(*[ErrorReply(400, "invalid_request_error", "bad request here")] * 3)
    p = chat("hello")
    assert p.returncode == 1
    assert "model_error" in p.stderr and "Traceback" not in p.stderr
