"""The durable audit log: one JSON line per invocation and per decision, append-only.

``AuditLog.write`` serializes and scrubs a record in the caller's thread and queues it; a
background thread appends queued records in batches, then flushes and ``fsync``\\ s, at most
``flush_interval_s`` after the first record of a batch arrived. ``write`` never blocks on disk
unless ``max_pending`` records are waiting (then the caller writes them itself, in order,
rather than drop any) and never raises. ``flush`` blocks until everything written before it
is on disk and returns how many records are acknowledged durable.

Nothing secret is written: every string is cleaned by a ``Sanitizer`` (granted secret values in
all their encodings, credential shapes), and values of fields named like ``password``,
``token`` or ``api_key`` are replaced. The kernel never passes raw skill arguments: it writes
``args_sha256`` (``guard.arguments_hash``) instead.

Records: ``{"ts": "<RFC 3339 UTC>", "event": "...", ...fields}``. Files rotate by size:
``audit.jsonl`` -> ``audit.jsonl.1`` -> ... -> ``audit.jsonl.<keep>``. A record torn by a crash
(the last line of a file, unterminated) is terminated on the next open and skipped on read.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

import structlog

from . import auditchain
from .closing import Closeable
from .sanitize import SanitizeConfig, Sanitizer

__all__ = ["AuditLog", "AuditReader", "NullAudit", "read_audit"]

log = structlog.get_logger("bastion.audit")

_SECRET_FIELD: Final = re.compile(
    r"pass(?:word|wd|phrase)?|secret|token|api[_-]?key|auth(?:orization)?|cookie|credential"
    r"|private[_-]?key",
    re.IGNORECASE,
)
_RECORD_CAP: Final = 64 * 1024


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _hide_secret_fields(value: Any) -> Any:
    """Replace string values of fields whose name looks secret (numbers such as token counts
    stay); iterative."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, item in node.items():
                if (
                    _SECRET_FIELD.search(key)
                    and not isinstance(item, (int, float, bool))
                    and item is not None
                ):
                    node[key] = "[REDACTED:FIELD]"
                elif isinstance(item, (dict, list)):
                    stack.append(item)
        elif isinstance(node, list):
            stack.extend(i for i in node if isinstance(i, (dict, list)))
    return value


class AuditLog(Closeable):
    """Append-only JSON-lines audit log with a background flusher and size-based rotation."""

    def __init__(
        self,
        path: Path | str,
        *,
        flush_interval_s: float = 0.2,
        batch: int = 64,
        rotate_bytes: int = 50 * 1024 * 1024,
        keep: int = 5,
        redact: Sanitizer | Iterable[str] | None = None,
        max_pending: int = 10_000,
    ) -> None:
        self.path = Path(path)
        self.flush_interval_s = flush_interval_s
        self.batch = max(1, batch)
        self.rotate_bytes = rotate_bytes
        self.keep = max(1, keep)
        self.max_pending = max(1, max_pending)
        self._sanitizer = (
            redact
            if isinstance(redact, Sanitizer)
            else Sanitizer(
                SanitizeConfig(
                    max_output_bytes=_RECORD_CAP,
                    redact_secrets=tuple(redact or ()),
                )
            )
        )
        self._cond = threading.Condition()
        self._io = threading.Lock()
        self._pending: list[tuple[int, str]] = []
        self._seq = 0
        self._handled = 0
        self._acked = 0
        self._failed = 0
        self._flush_requested = False
        self._closing = False
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = self._open()
        self._size = self._file.tell()
        self._thread = threading.Thread(target=self._run, name="bastion-audit", daemon=True)
        self._thread.start()

    # -- public --------------------------------------------------------------------------------

    @property
    def acknowledged(self) -> int:
        """Records written and fsynced so far."""
        with self._cond:
            return self._acked

    @property
    def failed(self) -> int:
        """Records that could not be written (disk errors); they were logged, not raised."""
        with self._cond:
            return self._failed

    def write(self, event: str, /, **fields: Any) -> None:
        """Queue one record; never raises, blocks only when ``max_pending`` are waiting."""
        try:
            line = self._serialize(event, fields)
            with self._cond:
                line = auditchain.link(self, line)  # in queue order: the order on disk
                self._seq += 1
                item = (self._seq, line)
                closed = self._closed
                if not closed:
                    self._pending.append(item)
                    if len(self._pending) >= self.batch:
                        self._cond.notify_all()
                full = len(self._pending) >= self.max_pending
            if closed:
                self._write_closed([item])
            elif full:
                self._drain()
        except Exception:
            log.exception("audit_write_failed", audit_event=str(event)[:64])

    def flush(self, timeout: float | None = None) -> int:
        """Wait until every record written before this call is on disk; return the number of
        records acknowledged durable (a record that failed to write is not counted)."""
        with self._cond:
            target = self._seq
            self._flush_requested = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._handled >= target or self._closed, timeout)
            return self._acked

    def close(self) -> None:
        """Write what is queued, stop the flusher and close the file; idempotent."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        with self._io, contextlib.suppress(OSError):
            self._file.close()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- internals -------------------------------------------------------------------------------

    def _serialize(self, event: str, fields: dict[str, Any]) -> str:
        record: dict[str, Any] = {"ts": _now(), "event": str(event)}
        for key, value in fields.items():
            record["field_" + key if key in ("ts", "event") else key] = value
        try:
            plain = json.loads(json.dumps(record, default=str, ensure_ascii=False))
        except (ValueError, TypeError, RecursionError) as exc:
            plain = {
                "ts": record["ts"],
                "event": record["event"],
                "unserializable": f"{type(exc).__name__}: {exc}"[:200],
            }
        plain = _hide_secret_fields(plain)
        clean = self._sanitizer.clean_value(plain).value
        if not isinstance(clean, dict):  # the record was over the size cap: keep it a record
            clean = {"ts": record["ts"], "event": record["event"], "truncated": clean}
        return json.dumps(clean, ensure_ascii=False, separators=(",", ":")) + "\n"

    def _open(self) -> IO[bytes]:
        f = open(self.path, "ab")  # noqa: SIM115 - held open for the log's lifetime
        if f.tell() > 0:
            # A crash may have torn the last record: terminate it so the next one stays whole.
            with open(self.path, "rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":
                    f.write(b"\n")
                    f.flush()
        return f

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._pending or self._closing or self._flush_requested):
                    self._cond.wait(self.flush_interval_s)
                # Batching window: the first queued record waits at most one interval.
                self._cond.wait_for(
                    lambda: (
                        self._closing or self._flush_requested or len(self._pending) >= self.batch
                    ),
                    self.flush_interval_s,
                )
                if self._closing and not self._pending:
                    return
            self._drain()

    def _drain(self) -> None:
        """Write everything queued, in order (holds the I/O lock while taking the batch)."""
        with self._io:
            with self._cond:
                batch = self._pending
                self._pending = []
                self._flush_requested = False
            if not batch:
                with self._cond:
                    self._cond.notify_all()
                return
            ok = self._append([line for _, line in batch])
            with self._cond:
                self._handled = batch[-1][0]
                if ok:
                    self._acked += len(batch)
                else:
                    self._failed += len(batch)
                self._cond.notify_all()

    def _append(self, lines: list[str]) -> bool:
        data = "".join(lines).encode("utf-8", errors="replace")
        try:
            self._file.write(data)
            self._file.flush()
            os.fsync(self._file.fileno())
            self._size += len(data)
            if self._size >= self.rotate_bytes:
                self._rotate()
            return True
        except Exception:
            log.exception("audit_append_failed", path=str(self.path), records=len(lines))
            return False

    def _rotate(self) -> None:
        """``audit.jsonl.<keep>`` is dropped, ``.n`` becomes ``.n+1``, the current one ``.1``."""
        self._file.close()
        self._rotated(self.keep).unlink(missing_ok=True)
        for i in range(self.keep - 1, 0, -1):
            if self._rotated(i).exists():
                self._rotated(i).replace(self._rotated(i + 1))
        self.path.replace(self._rotated(1))
        _fsync_dir(self.path.parent)
        self._file = open(self.path, "ab")  # noqa: SIM115 - held open until the next rotation
        self._size = 0

    def _rotated(self, i: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{i}")

    def _write_closed(self, batch: list[tuple[int, str]]) -> None:
        """A record written after ``close``: appended synchronously (never dropped)."""
        with self._io:
            try:
                with open(self.path, "ab") as f:
                    f.write("".join(line for _, line in batch).encode("utf-8", "replace"))
                    f.flush()
                    os.fsync(f.fileno())
                ok = True
            except OSError:
                log.exception("audit_append_failed", path=str(self.path), records=len(batch))
                ok = False
            with self._cond:
                self._handled = max(self._handled, batch[-1][0])
                if ok:
                    self._acked += len(batch)
                else:
                    self._failed += len(batch)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass
class NullAudit(Closeable):
    """An audit log that records nothing, for tests and embedders that opt out."""

    path: Path | None = None

    def write(self, event: str, /, **fields: Any) -> None:
        """Discard the record."""

    def flush(self, timeout: float | None = None) -> int:
        """Nothing is ever written: zero records acknowledged."""
        return 0

    def close(self) -> None:
        """Nothing to close."""


def _parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


@dataclass
class AuditReader:
    """Iterates audit records oldest first over rotated files, then the current one.

    Never raises on a bad file: a torn last line counts in ``torn``, any other line that is not
    a JSON object in ``corrupt``, an unreadable file in ``unreadable``.
    """

    path: Path
    skill: str | None = None
    since: datetime | None = None
    event: str | None = None
    torn: int = 0
    corrupt: int = 0
    unreadable: int = 0
    _started: bool = field(default=False, repr=False)
    _resume: tuple[int, int] | None = field(default=None, repr=False)
    """(inode, offset) where reading the live file stopped: ``follow`` continues from there."""

    def files(self) -> list[Path]:
        """The files to read, oldest first."""
        rotated: list[tuple[int, Path]] = []
        try:
            siblings = list(self.path.parent.glob(self.path.name + ".*"))
        except OSError:
            siblings = []
        for p in siblings:
            suffix = p.name[len(self.path.name) + 1 :]
            if suffix.isdigit():
                rotated.append((int(suffix), p))
        return [p for _, p in sorted(rotated, reverse=True)] + [self.path]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for path in self.files():
            yield from self._read(path)

    def _read(self, path: Path) -> Iterator[dict[str, Any]]:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        except OSError:
            self.unreadable += 1
            log.warning("audit_unreadable", path=str(path))
            return
        lines = data.split(b"\n")
        last = len(lines) - 1  # the element after the final newline ('' when terminated)
        if path == self.path:
            with contextlib.suppress(OSError):
                self._resume = (path.stat().st_ino, len(data) - len(lines[-1]))
        for i, raw in enumerate(lines):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw.decode("utf-8", errors="replace"))
            except (ValueError, RecursionError):
                rec = None
            if not isinstance(rec, dict):
                if i == last:
                    self.torn += 1
                else:
                    self.corrupt += 1
                continue
            if self._wanted(rec):
                yield rec

    def follow(
        self, *, poll_s: float = 0.25, stop: Callable[[], bool] = lambda: False
    ) -> Iterator[dict[str, Any]]:
        """Records appended to the live file after this call, as they arrive (``tail -f``).

        The file is opened now (where iterating this reader stopped, else at its end, so a
        record appended between the two is not lost), and kept open: on rotation the rest of the old
        file is read through the open handle before the new file is read from its start, so
        nothing is lost unless several whole files rotate away between two polls. Only complete
        lines are yielded; ends when ``stop()`` is true; never raises on a bad line.
        """
        handle: IO[bytes] | None = None
        try:
            handle = self.path.open("rb")
            resume = self._resume
            if resume is not None and os.fstat(handle.fileno()).st_ino == resume[0]:
                handle.seek(resume[1])  # what was appended since iterating is not lost
            else:
                handle.seek(0, os.SEEK_END)
        except OSError:
            handle = None
        return self._follow(handle, poll_s, stop)

    def _follow(
        self, handle: IO[bytes] | None, poll_s: float, stop: Callable[[], bool]
    ) -> Iterator[dict[str, Any]]:
        pending = b""
        try:
            while not stop():
                chunk = handle.read() if handle is not None else b""
                if chunk:
                    *lines, pending = (pending + chunk).split(b"\n")
                    yield from self._parse_lines(lines)
                    continue
                try:
                    st = self.path.stat()
                except OSError:
                    time.sleep(poll_s)
                    continue
                same = handle is not None and os.fstat(handle.fileno()).st_ino == st.st_ino
                if not same:
                    # Rotated (or created): the old handle is drained above; start the new file.
                    if handle is not None:
                        handle.close()
                    try:
                        handle, pending = self.path.open("rb"), b""
                    except OSError:
                        handle = None
                    continue
                time.sleep(poll_s)
        finally:
            if handle is not None:
                handle.close()

    def _parse_lines(self, lines: list[bytes]) -> Iterator[dict[str, Any]]:
        for raw in lines:
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw.decode("utf-8", errors="replace"))
            except (ValueError, RecursionError):
                rec = None
            if not isinstance(rec, dict):
                self.corrupt += 1
            elif self._wanted(rec):
                yield rec

    def _wanted(self, rec: dict[str, Any]) -> bool:
        if self.skill is not None and rec.get("skill") != self.skill:
            return False
        if self.event is not None and rec.get("event") != self.event:
            return False
        if self.since is not None:
            ts = _parse_ts(rec.get("ts"))
            if ts is None or ts < self.since:
                return False
        return True


def read_audit(
    path: Path | str,
    *,
    skill: str | None = None,
    since: datetime | str | None = None,
    event: str | None = None,
) -> AuditReader:
    """Records of the log at ``path`` (rotated files first), filtered; iterate the result, then
    read its ``torn`` and ``corrupt`` counts. ``since`` is a datetime or an RFC 3339 string."""
    when = _parse_ts(since) if isinstance(since, str) else since
    if isinstance(since, str) and when is None:
        raise ValueError(f"since={since!r} is not an RFC 3339 timestamp")
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return AuditReader(Path(path), skill=skill, since=when, event=event)
