"""The durable audit log: one JSON line per invocation and per decision, append-only.

``AuditLog.write`` serializes and redacts a record in the caller's thread and queues it; a
background thread appends queued records in batches (one ``write(2)`` per batch on an
``O_APPEND`` descriptor), then ``fsync``\\ s, at most ``flush_interval_s`` after the first record
of a batch arrived. ``write`` never raises. ``flush`` blocks until every record written before it
was attempted and returns how many records are acknowledged durable (written and fsynced); it
writes them itself, a group commit: concurrent flushers share one ``write(2)`` and ``fsync``.

The log fails closed and heals (docs/policy.md, "The audit log under faults"):

- before each batch the path is compared with the open descriptor (device and inode): a file
  moved away, deleted or replaced is noticed and the path is reopened (created if needed);
- a write that fails (disk full, I/O error, a path that became a FIFO or a device) keeps its
  records in memory, in order, and is retried every ``retry_s``; the bytes a failed write left
  behind (a partial line) are terminated with a newline before the next record;
- ``accepting`` turns False once ``buffer`` records wait unwritten: the kernel then refuses to
  run skills (``AUDIT_UNAVAILABLE``) unless ``[audit] on_failure = "continue"``; records past
  ``max_buffered`` (a memory bound) are dropped and counted in ``dropped``, never silently;
- rotation takes an exclusive ``flock`` on ``<path>.lock``, renames first and always reopens: a
  rename that fails leaves the current file in use (and reported); a process that finds the file
  already rotated by another process only reopens, so two processes may share one log;
- a FIFO, a device or a directory as the path is an ``AuditPathError`` at start-up (the path is
  opened with ``O_NONBLOCK`` and checked with ``fstat`` before anything can block).

Nothing secret is written: ``redact_record`` cleans every string with a ``Sanitizer`` (granted
secret values in all their encodings, credential shapes) and replaces values of fields named
like ``password``, ``token`` or ``api_key``. The kernel never passes raw skill arguments: it
writes ``args_sha256`` (``guard.arguments_hash``) instead.

Records: ``{"ts": "<RFC 3339 UTC>", "event": "...", ...fields}``. Files rotate by size:
``audit.jsonl`` -> ``audit.jsonl.1`` -> ... -> ``audit.jsonl.<keep>``. A record torn by a crash
(the last line of a file, unterminated) is terminated on the next open and skipped on read.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

from . import auditchain
from .closing import Closeable
from .errors import ConfigError
from .logs import get_logger
from .sanitize import SanitizeConfig, Sanitizer

__all__ = ["AuditLog", "AuditPathError", "AuditReader", "NullAudit", "read_audit", "redact_record"]

log = get_logger("bastion.audit")

_SECRET_FIELD: Final = re.compile(
    r"pass(?:word|wd|phrase)?|secret|token|api[_-]?key|auth(?:orization)?|cookie|credential"
    r"|private[_-]?key",
    re.IGNORECASE,
)
_RECORD_CAP: Final = 64 * 1024
_OPEN_FLAGS: Final = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC


class AuditPathError(ConfigError):
    """The audit path is not a regular file (a FIFO, a device, a directory): refused at start."""

    code = "AUDIT_PATH_INVALID"


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


def redact_record(record: dict[str, Any], sanitizer: Sanitizer) -> dict[str, Any]:
    """The record as written: plain JSON values, secret-named fields hidden, every string
    cleaned by ``sanitizer``; one over the size cap keeps ``ts`` and ``event``.

    The one redaction hook of the audit file (secret redaction builds on it)."""
    try:
        plain = json.loads(json.dumps(record, default=str, ensure_ascii=False))
    except (ValueError, TypeError, RecursionError) as exc:
        plain = {
            "ts": record.get("ts"),
            "event": record.get("event"),
            "unserializable": f"{type(exc).__name__}: {exc}"[:200],
        }
    plain = _hide_secret_fields(plain)
    clean = sanitizer.clean_value(plain).value
    if not isinstance(clean, dict):  # the record was over the size cap: keep it a record
        clean = {"ts": record.get("ts"), "event": record.get("event"), "truncated": clean}
    return clean


def _kind(mode: int) -> str | None:
    """What a non-regular file is, for the refusal message (None for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _refuse(path: Path, kind: str) -> AuditPathError:
    return AuditPathError(
        f"the audit path {str(path)!r} is {kind}, not a regular file",
        where="audit.path",
        fix="point [audit] path at a regular file (it is created if missing)",
    )


def open_audit_file(path: Path) -> int:
    """Open ``path`` for appending without ever blocking; refuse anything but a regular file."""
    with contextlib.suppress(FileNotFoundError):
        kind = _kind(os.stat(path).st_mode)
        if kind is not None:
            raise _refuse(path, kind)
    fd = os.open(path, _OPEN_FLAGS, 0o600)
    try:
        kind = _kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise _refuse(path, kind)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_all(fd: int, data: bytes) -> int:
    """Write ``data``; return the bytes written before an error (which is re-raised as
    ``_PartialWrite`` when some were)."""
    view = memoryview(data)
    done = 0
    while done < len(data):
        try:
            n = os.write(fd, view[done:])
        except OSError as exc:
            raise _PartialWrite(done, exc) from exc
        if n <= 0:
            raise _PartialWrite(done, OSError(28, "no space left on device"))
        done += n
    return done


class _PartialWrite(Exception):
    def __init__(self, done: int, cause: OSError) -> None:
        self.done = done
        self.cause = cause
        super().__init__(str(cause))


class AuditLog(Closeable):
    """Append-only JSON-lines audit log with a background flusher, size-based rotation, and
    self-healing on moved files, full disks and failed rotations."""

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
        buffer: int = 1_000,
        retry_s: float = 0.5,
        max_buffered: int | None = None,
    ) -> None:
        """``buffer``: records held in memory while writes fail before ``accepting`` turns
        False; ``max_buffered`` (default ``buffer + max_pending``): the memory bound past which
        records are dropped and counted; ``retry_s``: the wait between attempts while failing."""
        self.path = Path(path)
        self.flush_interval_s = flush_interval_s
        self.batch = max(1, batch)
        self.rotate_bytes = rotate_bytes
        self.keep = max(1, keep)
        self.max_pending = max(1, max_pending)
        self.buffer = max(1, buffer)
        self.retry_s = max(0.001, retry_s)
        self.max_buffered = max(self.buffer, max_buffered or self.buffer + self.max_pending)
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
        lock = threading.RLock()
        self._cond = threading.Condition(lock)
        """Flushers and ``close`` wait on it; every attempt's end is announced on it."""
        self._wake = threading.Condition(lock)
        """The writer thread alone waits on it (same lock), so that the end of a flusher's
        attempt, announced to the other flushers, does not wake the idle writer: that wake-up
        (a futex call and a GIL hand-off) sat between a call's fsync and its answer."""
        self._io = threading.Lock()
        self._pending: list[tuple[int, str]] = []
        self._seq = 0
        self._handled = 0
        self._acked = 0
        self._failed = 0
        self._dropped = 0
        self._failing = False
        self._last_error: str | None = None
        self._next_retry = 0.0
        self._next_rotate = 0.0
        self._reopened = 0
        self._attempts = 0
        """The newest attempt finished (attempts are numbered as they begin, ``_begun``)."""
        self._begun = 0
        self._flush_requested = False
        self._closing = False
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = open_audit_file(self.path)
        self._size = 0
        self._terminate_tail()
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
        """Write attempts that failed (disk errors); their records were kept and retried."""
        with self._cond:
            return self._failed

    @property
    def dropped(self) -> int:
        """Records lost: over ``max_buffered`` while failing, or still unwritten at close."""
        with self._cond:
            return self._dropped

    @property
    def accepting(self) -> bool:
        """False once ``buffer`` records wait unwritten because writes fail (the kernel's gate)."""
        with self._cond:
            return not self._failing or len(self._pending) < self.buffer

    def status(self) -> dict[str, Any]:
        """A JSON-able report for ``health()``: writable, failing, counts, the last error."""
        with self._cond:
            failing, pending = self._failing, len(self._pending)
            info: dict[str, Any] = {
                "failing": failing,
                "accepting": not failing or pending < self.buffer,
                "last_error": self._last_error,
                "failed_writes": self._failed,
                "dropped": self._dropped,
                "buffered": pending if failing else 0,
                "acknowledged": self._acked,
                "reopened": self._reopened,
                "rotation_error": self._rotation_error,
            }
        space = self._free_bytes()
        info["free_bytes"] = space
        info["writable"] = not failing and space != 0 and os.access(self.path, os.W_OK)
        if space == 0 and not failing:
            info["last_error"] = info["last_error"] or "no space left on the audit file system"
        return info

    def write(self, event: str, /, **fields: Any) -> None:
        """Queue one record; never raises, blocks only when ``max_pending`` are waiting."""
        try:
            line = self._serialize(event, fields)
            with self._cond:
                line = auditchain.link(self, line)  # in queue order: the order on disk
                self._seq += 1
                item = (self._seq, line)
                closed = self._closed
                drain = False
                if not closed:
                    if self._failing and len(self._pending) >= self.max_buffered:
                        self._dropped += 1
                        log.error("audit_record_dropped", audit_event=str(event)[:64])
                        return
                    self._pending.append(item)
                    # The first record starts the batching window; the writer, polling every
                    # interval while idle, writes it at most one interval later. It is not
                    # woken for it: most records are followed by a flush() that writes them
                    # in its own thread, and a wake-up here (a futex call and a GIL hand-off
                    # in the middle of the call) was pure cost. A full batch wakes it.
                    if len(self._pending) == 1:
                        self._first_at = time.monotonic()
                    elif len(self._pending) >= self.batch:
                        self._wake.notify()
                    drain = len(self._pending) >= self.max_pending and not self._failing
            if closed:
                self._write_closed([item])
            elif drain:
                self._drain()
        except Exception:
            log.exception("audit_write_failed", audit_event=str(event)[:64])

    def flush(
        self, timeout: float | None = None, *, on_written: Callable[[], object] | None = None
    ) -> int:
        """Wait until every record written before this call was attempted (written, or kept for
        retry after a failure); return the number of records acknowledged durable.

        ``on_written`` is called once: when this call leads the group, right after the group's
        ``write(2)``, before its ``fsync``; otherwise when the flush returns. A server hands
        the kernel's result to its event loop there, so that the answer is built while the
        disk syncs and not while the flush still needs the interpreter.

        Group commit in the caller's thread: a flusher that finds no group being written leads
        one, writing and fsyncing everything queued (its own record and those of every call
        that queued one meanwhile); the others wait for that attempt, find their record
        handled and return, or one of them leads the next group. No hand-off to the writer
        thread and back, so a lone durable call costs one ``write(2)`` and one ``fsync``, and
        N concurrent calls share fsyncs."""
        fire = _Once(on_written)
        try:
            acked = self._flush(timeout, fire)
        finally:
            fire()
        fire.reraise()  # the callback's own error, once the flush is complete
        return acked

    def _flush(self, timeout: float | None, fire: Callable[[], None]) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            # Only an attempt that begins after this call counts for records kept after a
            # failure: one already under way may fail on a disk freed meanwhile.
            target, attempts = self._seq, self._begun
        while True:
            with self._cond:
                if self._closed or self._flushed(target, attempts):
                    return self._acked
                if self._closing:
                    break
                if self._committing:  # a leader is writing: its batch may hold our record
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return self._acked
                    self._cond.wait(left)  # every attempt ends with notify_all
                    continue
                self._committing = True
            try:
                with self._io:
                    self._drain_held(before_sync=fire)
            finally:
                with self._cond:
                    self._committing = False
                    self._cond.notify_all()
        # Closing: the writer thread and close() write what is left; wait for them.
        with self._cond:
            self._flush_requested = True
            self._next_retry = 0.0
            self._wake.notify()
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._cond.wait_for(lambda: self._closed or self._flushed(target, attempts), left)
            return self._acked

    def _flushed(self, target: int, attempts: int) -> bool:
        """Whether every record up to ``target`` was attempted by an attempt begun after the
        ``attempts``-th (under the condition's lock)."""
        if self._handled < target:
            return False
        if self._attempts > attempts:  # attempts run one at a time: all before it ended too
            return True
        # Records kept after a failed attempt are tried once more for this flush; so are those
        # in an attempt under way (its batch is out of ``_pending`` until it ends).
        waiting = bool(self._pending) and self._pending[0][0] <= target
        return not waiting and self._begun == self._attempts

    def close(self) -> None:
        """Write what is queued, stop the flusher and close the file; idempotent. Records still
        unwritable then are counted in ``dropped`` and logged."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._next_retry = 0.0
            self._wake.notify()
            self._cond.notify_all()
        self._thread.join()
        with self._io:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None
        with self._cond:
            lost = len(self._pending)
            if lost:
                self._dropped += lost
                self._pending = []
                log.error("audit_records_lost_at_close", records=lost, path=str(self.path))
            self._closed = True
            self._cond.notify_all()

    # -- internals -------------------------------------------------------------------------------

    def _serialize(self, event: str, fields: dict[str, Any]) -> str:
        record: dict[str, Any] = {"ts": _now(), "event": str(event)}
        for key, value in fields.items():
            record["field_" + key if key in ("ts", "event") else key] = value
        clean = redact_record(record, self._sanitizer)
        return json.dumps(clean, ensure_ascii=False, separators=(",", ":")) + "\n"

    def _free_bytes(self) -> int | None:
        fd = self._fd
        if fd is None:
            return None
        try:
            st = os.fstatvfs(fd)
        except OSError:
            return None
        return st.f_bavail * st.f_frsize

    def _terminate_tail(self) -> None:
        """A crash or a failed write may have torn the last record: end it with a newline so
        the next record stays whole (the reader skips the torn line)."""
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        if size > 0 and os.pread(self._fd, 1, size - 1) != b"\n":
            _write_all(self._fd, b"\n")
            size += 1
        self._size = size

    def _reopen(self, reason: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = open_audit_file(self.path)
        old, self._fd = self._fd, fd
        if old is not None:
            with contextlib.suppress(OSError):
                os.close(old)
        self._terminate_tail()
        if reason != "rotated":
            self._reopened += 1
            log.warning("audit_reopened", path=str(self.path), reason=reason)

    def _ensure_open(self) -> None:
        """Reopen when the path no longer names the open file (moved, deleted, replaced)."""
        if self._fd is None:
            self._reopen("closed")
            return
        try:
            fst = os.fstat(self._fd)
        except OSError:
            self._fd = None
            self._reopen("descriptor lost")
            return
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._reopen("file moved or deleted")
            return
        if (st.st_dev, st.st_ino) != (fst.st_dev, fst.st_ino):
            self._reopen("file replaced")

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._pending or self._closing or self._flush_requested):
                    self._wake.wait(self.flush_interval_s)  # write() does not wake us
                if self._failing and not self._closing:
                    delay = self._next_retry - time.monotonic()
                    if delay > 0:
                        self._wake.wait_for(
                            lambda: self._closing or self._next_retry <= time.monotonic(), delay
                        )
                elif not self._closing:
                    # Batching window: the first queued record waits at most one interval.
                    left = self._first_at + self.flush_interval_s - time.monotonic()
                    if left > 0:
                        self._wake.wait_for(
                            lambda: (
                                self._closing
                                or self._flush_requested
                                or len(self._pending) >= self.batch
                            ),
                            left,
                        )
                closing = self._closing
            self._drain()
            if closing:
                with self._cond:
                    if not self._pending or self._failing:
                        return

    def _drain(self) -> None:
        """Write everything queued, in order (holds the I/O lock while taking the batch)."""
        with self._io:
            self._drain_held()

    def _drain_held(self, before_sync: Callable[[], None] | None = None) -> None:
        """``_drain`` with the I/O lock already held by the caller."""
        with self._cond:
            batch = self._pending
            self._pending = []
            self._flush_requested = False
            top = self._seq  # every record up to here is in the batch, written or dropped
            if batch:
                self._begun += 1
                ticket = self._begun
        if not batch:
            with self._cond:
                self._handled = max(self._handled, top)
                self._cond.notify_all()
            return
        written, synced, error = self._append([line for _, line in batch], before_sync)
        with self._cond:
            self._handled = max(self._handled, top)
            self._attempts = max(self._attempts, ticket)
            if synced:
                self._acked += written
            rest = batch[written:]
            if error is None:
                if self._failing:
                    log.warning("audit_recovered", path=str(self.path))
                self._failing = False
            else:
                self._failed += 1
                if not self._failing or error != self._last_error:
                    log.error("audit_append_failed", path=str(self.path), reason=error)
                self._last_error = error
                self._failing = True
                self._next_retry = time.monotonic() + self.retry_s
                self._pending = rest + self._pending
                over = len(self._pending) - self.max_buffered
                if over > 0:
                    self._dropped += over
                    del self._pending[-over:]
                    log.error("audit_records_dropped", records=over, path=str(self.path))
            self._cond.notify_all()

    def _append(
        self, lines: list[str], before_sync: Callable[[], None] | None = None
    ) -> tuple[int, bool, str | None]:
        """Append ``lines``; return (records wholly written, whether fsync succeeded, error).
        ``before_sync``: called once all are written, right before the ``fsync``."""
        datas = [line.encode("utf-8", errors="replace") for line in lines]
        blob = b"".join(datas)
        try:
            self._ensure_open()
            if self._fd_needs_tail:
                self._terminate_tail()
                self._fd_needs_tail = False
            assert self._fd is not None
            _write_all(self._fd, blob)
        except _PartialWrite as exc:
            whole, end = 0, 0
            for d in datas:
                end += len(d)
                if end > exc.done:
                    break
                whole += 1
            # A torn tail is terminated before the next record (on the next attempt).
            self._fd_needs_tail = True
            synced = whole > 0 and self._sync()
            return whole, synced, self._report(exc.cause)
        except Exception as exc:
            self._fd_needs_tail = True
            return 0, False, self._report(exc)
        if before_sync is not None:
            before_sync()
        if not self._sync():
            return len(lines), False, self._last_sync_error
        try:
            self._size = os.fstat(self._fd).st_size
        except OSError:
            self._size += len(blob)
        if self._size >= self.rotate_bytes and time.monotonic() >= self._next_rotate:
            self._rotate()
        return len(lines), True, None

    _fd_needs_tail = False
    _committing = False
    """A flusher is writing a group (the followers wait for its attempt, then check)."""
    _first_at = 0.0
    """When the oldest queued record arrived (``time.monotonic``): its batching window."""
    _rotation_error: str | None = None
    _last_sync_error: str | None = None

    def _sync(self) -> bool:
        assert self._fd is not None
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self._last_sync_error = self._report(exc)
            return False
        return True

    def _report(self, exc: BaseException) -> str:
        text = (
            f"{exc.strerror or exc} ({type(exc).__name__})"
            if isinstance(exc, OSError)
            else f"{type(exc).__name__}: {exc}"
        )[:300]
        return text

    def _rotate(self) -> None:
        """Under ``<path>.lock``: if the path is still this file and still over the size,
        ``.keep`` is dropped, ``.n`` becomes ``.n+1`` and the file ``.1``; then reopen, always.

        A failed rename keeps the current file in use (retried in 5 s, reported in the log)."""
        lock_fd: int | None = None
        try:
            lock_fd = os.open(
                self.path.with_name(self.path.name + ".lock"),
                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                0o600,
            )
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            assert self._fd is not None
            fst = os.fstat(self._fd)
            try:
                st: os.stat_result | None = os.stat(self.path)
            except FileNotFoundError:
                st = None
            if (
                st is not None
                and (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)
                and st.st_size >= self.rotate_bytes
            ):
                for i in range(self.keep - 1, 0, -1):
                    with contextlib.suppress(FileNotFoundError):
                        os.replace(self._rotated(i), self._rotated(i + 1))
                os.replace(self.path, self._rotated(1))
                _fsync_dir(self.path.parent)
            self._reopen("rotated")
        except OSError as exc:
            self._next_rotate = time.monotonic() + 5.0
            self._rotation_error = self._report(exc)
            log.error("audit_rotation_failed", path=str(self.path), reason=self._rotation_error)
        finally:
            if lock_fd is not None:
                os.close(lock_fd)  # releases the flock

    def _rotated(self, i: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{i}")

    def _write_closed(self, batch: list[tuple[int, str]]) -> None:
        """A record written after ``close``: appended synchronously (never dropped silently)."""
        with self._io:
            ok = False
            try:
                fd = open_audit_file(self.path)
                try:
                    self._fd = fd
                    self._terminate_tail()
                    _write_all(fd, "".join(line for _, line in batch).encode("utf-8", "replace"))
                    os.fsync(fd)
                    ok = True
                finally:
                    self._fd = None
                    os.close(fd)
            except (OSError, _PartialWrite, ConfigError) as exc:
                log.error("audit_append_failed", path=str(self.path), reason=self._report(exc))
            with self._cond:
                self._handled = max(self._handled, batch[-1][0])
                if ok:
                    self._acked += len(batch)
                else:
                    self._failed += 1
                    self._dropped += len(batch)


class _Once:
    """A callback that runs at most once (none: nothing). Its exception is kept for
    ``reraise``: raised inside the flush, it would leave the attempt half booked."""

    __slots__ = ("_error", "_fn")

    def __init__(self, fn: Callable[[], object] | None) -> None:
        self._fn = fn
        self._error: BaseException | None = None

    def __call__(self) -> None:
        fn, self._fn = self._fn, None
        if fn is not None:
            try:
                fn()
            except BaseException as exc:
                self._error = exc

    def reraise(self) -> None:
        if self._error is not None:
            raise self._error


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

    def flush(
        self, timeout: float | None = None, *, on_written: Callable[[], object] | None = None
    ) -> int:
        """Nothing is ever written: zero records acknowledged (``on_written`` called at once)."""
        if on_written is not None:
            on_written()
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
