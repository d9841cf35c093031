"""Conversations persisted in SQLite: sessions, their messages, and the tool calls they made.

One file (default ``<user data dir>/bastion/conversations.sqlite3``; ``BASTION_CONVERSATIONS``
or ``ConversationStore.open(path)`` override it), WAL mode, a ``schema_version`` table and
forward-only migrations. Messages are stored as Messages API JSON, appended in order; tool
calls record the skill, a hash of the arguments (never the arguments), outcome and duration.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, final

from .closing import Closeable
from .errors import BastionError

__all__ = [
    "SCHEMA_VERSION",
    "ConversationStore",
    "SessionInfo",
    "SessionRecord",
    "StoreError",
    "ToolCallRecord",
    "args_hash",
    "default_path",
]

_MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: sessions, messages, tool calls
    """
    CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        model TEXT NOT NULL
    );
    CREATE TABLE messages (
        session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (session_id, seq)
    );
    CREATE TABLE tool_calls (
        id INTEGER PRIMARY KEY,
        session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        tool_use_id TEXT NOT NULL,
        skill TEXT NOT NULL,
        args_hash TEXT NOT NULL,
        outcome TEXT NOT NULL,
        duration_ms REAL NOT NULL,
        created REAL NOT NULL
    );
    CREATE INDEX tool_calls_session ON tool_calls(session_id);
    """,
    # 2: running usage and cost per session
    """
    ALTER TABLE sessions ADD COLUMN input_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sessions ADD COLUMN output_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sessions ADD COLUMN cost_usd REAL NOT NULL DEFAULT 0;
    """,
)
SCHEMA_VERSION: Final = len(_MIGRATIONS)


class StoreError(BastionError):
    """The conversation store cannot be used (unreadable file, newer schema, unknown session)."""

    code = "STORE_ERROR"


def default_path() -> Path:
    """``BASTION_CONVERSATIONS`` or ``<user data dir>/bastion/conversations.sqlite3``."""
    env = os.environ.get("BASTION_CONVERSATIONS")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("bastion")) / "conversations.sqlite3"


def args_hash(arguments: Any) -> str:
    """sha256 of the canonical JSON of tool arguments (stored instead of the arguments)."""
    text = json.dumps(
        arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr
    )
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A session's summary, as listed."""

    name: str
    model: str
    created: float
    updated: float
    messages: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A whole session: its summary and its messages in order."""

    info: SessionInfo
    messages: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ToolCallRecord:
    """One tool call as stored."""

    tool_use_id: str
    skill: str
    args_hash: str
    outcome: str
    duration_ms: float


@final
class ConversationStore(Closeable):
    """A SQLite file of sessions; thread-safe; use ``open`` and ``close`` (or ``with``)."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path | str | None = None) -> ConversationStore:
        """Open (creating and migrating as needed) the store at ``path`` or ``default_path()``."""
        p = Path(path).expanduser() if path is not None else default_path()
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(p, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
            _migrate(conn, p)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open conversation store {str(p)!r}: {exc}") from exc
        return cls(conn, p)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @property
    def schema_version(self) -> int:
        with self._lock:
            return _version(self._conn)

    def _session_id(self, name: str, model: str | None, now: float) -> int:
        row = self._conn.execute("SELECT id FROM sessions WHERE name = ?", (name,)).fetchone()
        if row is not None:
            if model:
                self._conn.execute(
                    "UPDATE sessions SET updated = ?, model = ? WHERE id = ?", (now, model, row[0])
                )
            return int(row[0])
        cur = self._conn.execute(
            "INSERT INTO sessions (name, created, updated, model) VALUES (?, ?, ?, ?)",
            (name, now, now, model or ""),
        )
        return int(cur.lastrowid or 0)

    def save(
        self,
        session: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str | None = None,
        tool_calls: Sequence[ToolCallRecord] = (),
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: float = 0.0,
    ) -> int:
        """Append ``messages`` (and tool calls, usage) to ``session``, creating it if new.

        Returns the number of messages the session now holds.
        """
        if not session:
            raise StoreError("a session name must not be empty")
        now = time.time()
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                sid = self._session_id(session, model, now)
                (seq,) = self._conn.execute(
                    "SELECT COALESCE(MAX(seq), -1) + 1 FROM messages WHERE session_id = ?", (sid,)
                ).fetchone()
                self._conn.executemany(
                    "INSERT INTO messages (session_id, seq, role, content, created) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [
                        (
                            sid,
                            seq + i,
                            str(m.get("role", "")),
                            json.dumps(m.get("content"), ensure_ascii=False),
                            now,
                        )
                        for i, m in enumerate(messages)
                    ],
                )
                self._conn.executemany(
                    "INSERT INTO tool_calls (session_id, tool_use_id, skill, args_hash, outcome, "
                    "duration_ms, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (sid, t.tool_use_id, t.skill, t.args_hash, t.outcome, t.duration_ms, now)
                        for t in tool_calls
                    ],
                )
                self._conn.execute(
                    "UPDATE sessions SET updated = ?, input_tokens = input_tokens + ?, "
                    "output_tokens = output_tokens + ?, cost_usd = cost_usd + ? WHERE id = ?",
                    (now, input_tokens, output_tokens, cost_usd, sid),
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            return int(seq) + len(messages)

    def _info(self, where: str, params: tuple[Any, ...]) -> list[SessionInfo]:
        rows = self._conn.execute(
            "SELECT s.name, s.model, s.created, s.updated, "
            "(SELECT COUNT(*) FROM messages m WHERE m.session_id = s.id), "
            "s.input_tokens, s.output_tokens, s.cost_usd FROM sessions s "
            f"{where} ORDER BY s.updated DESC, s.id DESC",
            params,
        ).fetchall()
        return [
            SessionInfo(
                str(r[0]),
                str(r[1]),
                float(r[2]),
                float(r[3]),
                int(r[4]),
                int(r[5]),
                int(r[6]),
                float(r[7]),
            )
            for r in rows
        ]

    def list_sessions(self) -> list[SessionInfo]:
        """All sessions, most recently updated first."""
        with self._lock:
            return self._info("", ())

    def exists(self, session: str) -> bool:
        with self._lock:
            return bool(self._info("WHERE s.name = ?", (session,)))

    def load(self, session: str) -> SessionRecord:
        """A session's messages in order; ``StoreError`` quoting the name if there is none."""
        with self._lock:
            infos = self._info("WHERE s.name = ?", (session,))
            if not infos:
                known = [i.name for i in self._info("", ())][:10]
                raise StoreError(f"no conversation named {session!r} (known: {known!r})")
            rows = self._conn.execute(
                "SELECT m.role, m.content FROM messages m JOIN sessions s ON s.id = m.session_id "
                "WHERE s.name = ? ORDER BY m.seq",
                (session,),
            ).fetchall()
        return SessionRecord(infos[0], [{"role": r[0], "content": json.loads(r[1])} for r in rows])

    def tool_calls(self, session: str) -> list[ToolCallRecord]:
        """The tool calls recorded for ``session``, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT t.tool_use_id, t.skill, t.args_hash, t.outcome, t.duration_ms "
                "FROM tool_calls t JOIN sessions s ON s.id = t.session_id WHERE s.name = ? "
                "ORDER BY t.id",
                (session,),
            ).fetchall()
        return [
            ToolCallRecord(str(r[0]), str(r[1]), str(r[2]), str(r[3]), float(r[4])) for r in rows
        ]

    def delete(self, session: str) -> bool:
        """Remove a session and everything recorded for it; True if it existed."""
        with self._lock:
            cur = self._conn.execute("DELETE FROM sessions WHERE name = ?", (session,))
            return cur.rowcount > 0


def _version(conn: sqlite3.Connection) -> int:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    current = _version(conn)
    if current > SCHEMA_VERSION:
        raise StoreError(
            f"conversation store {str(path)!r} has schema version {current}, newer than this "
            f"Bastion's {SCHEMA_VERSION}; upgrade Bastion or use another file"
        )
    for version in range(current + 1, SCHEMA_VERSION + 1):
        script = _MIGRATIONS[version - 1]
        try:
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nINSERT INTO schema_version (version) "
                f"VALUES ({version});\nCOMMIT;"
            )
        except sqlite3.Error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
