"""Conversations in SQLite: schema and migrations, save/load/list, resuming a session."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from bastion.agent import Agent
from bastion.conversations import (
    SCHEMA_VERSION,
    ConversationStore,
    StoreError,
    args_hash,
    default_path,
)
from bastion.models import AnthropicModel, ScriptedModel, ScriptedTurn, Usage
from bastion.tokens import tool_pairs_intact
from tests.llm.fake_anthropic import FakeAnthropic, Reply, text, tool_use
from tests.llm.host import FunctionHost


def test_new_store_has_schema_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    with ConversationStore.open(path) as store:
        assert store.schema_version == SCHEMA_VERSION == 2
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_default_path_is_overridable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_CONVERSATIONS", str(tmp_path / "x.db"))
    assert default_path() == tmp_path / "x.db"
    monkeypatch.delenv("BASTION_CONVERSATIONS")
    assert default_path().parts[-2:] == ("bastion", "conversations.sqlite3")


def test_version_1_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE schema_version (version INTEGER NOT NULL);
        INSERT INTO schema_version VALUES (1);
        CREATE TABLE sessions (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
            created REAL NOT NULL, updated REAL NOT NULL, model TEXT NOT NULL);
        CREATE TABLE messages (session_id INTEGER NOT NULL, seq INTEGER NOT NULL,
            role TEXT NOT NULL, content TEXT NOT NULL, created REAL NOT NULL,
            PRIMARY KEY (session_id, seq));
        CREATE TABLE tool_calls (id INTEGER PRIMARY KEY, session_id INTEGER NOT NULL,
            tool_use_id TEXT NOT NULL, skill TEXT NOT NULL, args_hash TEXT NOT NULL,
            outcome TEXT NOT NULL, duration_ms REAL NOT NULL, created REAL NOT NULL);
        INSERT INTO sessions VALUES (1, 'old', 1.0, 1.0, 'claude-x');
        INSERT INTO messages VALUES (1, 0, 'user', '"hello"', 1.0);
    """)
    conn.close()
    with ConversationStore.open(path) as store:
        assert store.schema_version == 2
        rec = store.load("old")
        assert rec.messages == [{"role": "user", "content": "hello"}]
        assert rec.info.input_tokens == 0 and rec.info.model == "claude-x"


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE schema_version (version INTEGER NOT NULL);"
        "INSERT INTO schema_version VALUES (99);"
    )
    conn.close()
    with pytest.raises(StoreError, match="schema version 99"):
        ConversationStore.open(path)


def test_save_load_list(tmp_path: Path) -> None:
    with ConversationStore.open(tmp_path / "c.db") as store:
        msgs: list[dict[str, Any]] = [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "héllo"}]},
        ]
        assert store.save("a", msgs, model="m1", input_tokens=5, output_tokens=2, cost_usd=0.5) == 2
        assert store.save("a", [{"role": "user", "content": "more"}], input_tokens=1) == 3
        store.save("b", [{"role": "user", "content": "other"}], model="m2")
        rec = store.load("a")
        assert rec.messages == [*msgs, {"role": "user", "content": "more"}]
        assert (rec.info.input_tokens, rec.info.output_tokens, rec.info.cost_usd) == (6, 2, 0.5)
        names = {s.name: s for s in store.list_sessions()}
        assert set(names) == {"a", "b"} and names["a"].messages == 3
        with pytest.raises(StoreError, match="'nope'"):
            store.load("nope")
        assert store.delete("b") and not store.exists("b")


def test_args_hash_is_canonical() -> None:
    assert args_hash({"a": 1, "b": [1, 2]}) == args_hash({"b": [1, 2], "a": 1})
    assert args_hash({"a": 1}) != args_hash({"a": 2})


def test_agent_persists_and_resumes_a_session(tmp_path: Path) -> None:
    db = tmp_path / "conv.sqlite3"
    host = FunctionHost().add("add", lambda a, b: a + b)
    with FakeAnthropic() as fake:
        fake.script(
            Reply([tool_use("add", {"a": 2, "b": 2}, "u1")], input_tokens=20),
            Reply([text("4")], input_tokens=30),
        )
        with ConversationStore.open(db) as store:
            model = AnthropicModel("claude-sonnet-5-5", api_key="k", base_url=fake.base_url)
            run = Agent(host, model=model, store=store, session="math").run("2+2?")
            assert run.text == "4" and run.session == "math"
            calls = store.tool_calls("math")
            assert [(c.tool_use_id, c.skill, c.outcome) for c in calls] == [("u1", "add", "ok")]
            assert calls[0].args_hash == args_hash({"a": 2, "b": 2})
        # a later process: a new store object and a new agent resume by name
        fake.script(Reply([text("8")]))
        with ConversationStore.open(db) as store:
            model = AnthropicModel("claude-sonnet-5-5", api_key="k", base_url=fake.base_url)
            agent = Agent(host, model=model, store=store, session="math")
            assert len(agent.messages) == 4
            run2 = agent.run("and doubled?")
            sent = fake.requests[-1].body["messages"]
            assert sent[:4] == run.messages
            assert sent[4] == {"role": "user", "content": "and doubled?"}
            rec = store.load("math")
            assert len(rec.messages) == 6 and rec.messages == run2.messages
            assert rec.info.input_tokens == 20 + 30 + 10
            assert rec.info.model == "claude-sonnet-5-5"


def test_a_run_stopped_by_a_limit_is_saved_and_resumable(tmp_path: Path) -> None:
    host = FunctionHost().add("t", lambda: 1)
    with ConversationStore.open(tmp_path / "c.db") as store:
        looping = ScriptedModel(
            [ScriptedTurn(tool_calls=[("t", {})], usage=Usage(1, 1))], repeat_last=True
        )
        run = Agent(host, model=looping, store=store, session="s", max_steps=2).run("go")
        assert run.stop_reason == "max_steps"
        saved = store.load("s").messages
        assert saved == run.messages and tool_pairs_intact(saved)
        follow = ScriptedModel(["done"])
        run2 = Agent(host, model=follow, store=store, session="s").run("finish up")
        assert run2.stop_reason == "end_turn"
        sent = list(follow.requests[0].messages)
        assert tool_pairs_intact(sent) and sent[-1] == {"role": "user", "content": "finish up"}


def test_store_needs_a_session_name(tmp_path: Path) -> None:
    with (
        ConversationStore.open(tmp_path / "c.db") as store,
        pytest.raises(ValueError, match="session"),
    ):
        Agent(FunctionHost(), model=ScriptedModel([]), store=store)
