"""Durable answers under concurrency: the audit log's group commit (``AuditLog.flush`` writes
and fsyncs in the caller's thread, concurrent flushers sharing one fsync) never lets an answer
out before its record is on disk, on a real file system, and fails closed on a full one."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import anyio
import pytest

from bastion.audit import AuditLog, read_audit
from bastion.guard import arguments_hash
from tests.faults.conftest import small_fs
from tests.faults.diskfill import fill

from .clients import http_client
from .conftest import ALICE, Served

__all__ = ["small_fs"]  # the fault suite's real tmpfs fixture, used here

THREADS = 16
PER_THREAD = 25


def _on_disk(path: Path) -> bytes:
    """The file's bytes read through a descriptor of its own (what a crash would leave, once
    fsynced: the writer's buffers play no part)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def test_every_concurrent_flusher_finds_its_record_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    missing: list[str] = []
    acked_low: list[int] = []
    start = threading.Barrier(THREADS)

    def caller(t: int) -> None:
        start.wait()
        for i in range(PER_THREAD):
            mark = f"t{t}-r{i}"
            log.write("invoke", mark=mark)
            acked = log.flush()
            if f'"mark":"{mark}"'.encode() not in _on_disk(path):
                missing.append(mark)
            if acked < i + 1:  # at least this thread's records so far are acknowledged
                acked_low.append(acked)

    with AuditLog(path, flush_interval_s=5.0) as log:  # no help from the writer's window
        threads = [threading.Thread(target=caller, args=(t,)) for t in range(THREADS)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert missing == [] and acked_low == []
        assert log.acknowledged == THREADS * PER_THREAD and log.failed == 0
    marks = [r["mark"] for r in read_audit(path)]
    assert sorted(marks) == sorted(f"t{t}-r{i}" for t in range(THREADS) for i in range(PER_THREAD))
    for t in range(THREADS):  # each thread's records in its own order
        mine = [m for m in marks if m.startswith(f"t{t}-")]
        assert mine == [f"t{t}-r{i}" for i in range(PER_THREAD)]


@pytest.mark.parametrize("round_", range(8))  # a race: the writer's retry under way at the unlink
def test_concurrent_flushers_on_a_full_disk_are_not_acknowledged_and_recover(
    small_fs: Path, round_: int
) -> None:
    path = small_fs / "audit.jsonl"
    with AuditLog(path, flush_interval_s=5.0, retry_s=0.01) as log:
        log.write("e", t=-1, i=-1)
        assert log.flush() == 1
        filler = fill(small_fs)
        got: list[int] = []
        start = threading.Barrier(8)

        def caller(t: int) -> None:
            start.wait()
            for i in range(10):
                log.write("e", t=t, i=i, pad="q" * 300)  # new pages: the full disk refuses
                got.append(log.flush())

        threads = [threading.Thread(target=caller, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert log.failed >= 1 and log.status()["failing"]
        assert max(got) < 81  # a flush on a full disk never acknowledges what is not on disk
        filler.unlink()
        assert log.flush() == 81 and not log.status()["failing"]
    recs = [(r["t"], r["i"]) for r in read_audit(path)]
    assert sorted(recs) == sorted([(-1, -1)] + [(t, i) for t in range(8) for i in range(10)])


@pytest.mark.parametrize("era", ["2026-07-28", "legacy"])
def test_each_concurrent_mcp_answer_follows_its_record_on_disk(served: Served, era: str) -> None:
    """16 SDK clients at once against ``bastion serve``: when a client holds its answer, the
    call's ``invoke`` record (its exact arguments' hash) is already in the file. The
    2026-07-28 fast path builds its answer while the record is fsynced and waits for it
    before sending; the session era's handler waits before returning."""
    late: list[int] = []

    async def client(c: int) -> None:
        async with http_client(served.url, ALICE, era) as cl:
            await cl.list_tools()
            for i in range(6):
                args = {"n": c * 100 + i}
                r = await cl.call_tool("echo", args)
                assert not r.is_error
                digest = arguments_hash(args).encode()
                if digest not in _on_disk(served.audit):
                    late.append(c * 100 + i)

    async def body() -> None:
        async with anyio.create_task_group() as tg:
            for c in range(16):
                tg.start_soon(client, c)

    anyio.run(body)
    assert late == []
    hashes = {r.get("args_sha256") for r in read_audit(served.audit, event="invoke")}
    assert {arguments_hash({"n": c * 100 + i}) for c in range(16) for i in range(6)} <= hashes


def test_a_lone_record_reaches_the_disk_without_a_flush(tmp_path: Path) -> None:
    """``write`` does not wake the writer thread (the flush that usually follows writes the
    record itself); a record nobody flushes is still written by the idle writer's poll."""
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, flush_interval_s=0.05) as log:
        log.write("e", mark="lone")
        deadline = time.monotonic() + 30
        while log.acknowledged < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert log.acknowledged == 1  # written and fsynced by the writer thread
        assert b'"mark":"lone"' in _on_disk(path)
