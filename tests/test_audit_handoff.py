"""``AuditLog.flush(on_written=...)`` and ``Kernel.ainvoke_recorded``: a server gets a call's
result once its record is written, builds its answer during the fsync, and sends it only once
the record is on disk. Also: a flush does not wake the idle writer thread.

Real files, a real tmpfs that fills up, the kernel's real pool thread; no monkeypatching."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bastion import Kernel, hookimpl, load_policy, native_skill
from bastion.audit import AuditLog, NullAudit, read_audit
from bastion.guard import arguments_hash
from tests.faults.conftest import small_fs
from tests.faults.diskfill import fill

__all__ = ["small_fs"]  # the fault suite's real tmpfs fixture, used here


def _on_disk(path: Path) -> bytes:
    """The file's bytes through a descriptor of its own (not the writer's buffers)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


class TestOnWritten:
    """The hand-off is called exactly once on every path, after this call's records reached
    the file when the flush leads the write, and never makes a flush acknowledge more."""

    def test_a_leading_flush_calls_it_once_with_the_record_already_in_the_file(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        seen: list[bytes] = []
        with AuditLog(path, flush_interval_s=5.0) as log:  # the writer's window never helps
            for i in range(5):
                log.write("invoke", mark=f"m{i}")
                acked = log.flush(on_written=lambda: seen.append(_on_disk(path)))
                assert acked == i + 1
        assert len(seen) == 5
        for i, data in enumerate(seen):
            assert f'"mark":"m{i}"'.encode() in data

    def test_a_flush_with_nothing_to_write_calls_it_once(self, tmp_path: Path) -> None:
        calls: list[int] = []
        with AuditLog(tmp_path / "audit.jsonl") as log:
            assert log.flush(on_written=lambda: calls.append(1)) == 0
            log.write("invoke", n=1)
            log.flush()
            assert log.flush(on_written=lambda: calls.append(2)) == 1
        assert calls == [1, 2]

    def test_concurrent_flushers_each_call_theirs_once(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        counts = [0] * 8
        start = threading.Barrier(8)

        def caller(t: int) -> None:
            start.wait()
            for i in range(20):
                log.write("invoke", t=t, i=i)

                def mark(t: int = t) -> None:
                    counts[t] += 1

                log.flush(on_written=mark)

        with AuditLog(path, flush_interval_s=5.0) as log:
            threads = [threading.Thread(target=caller, args=(t,)) for t in range(8)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            assert log.acknowledged == 160
        assert counts == [20] * 8

    def test_on_a_full_disk_it_is_called_once_and_nothing_more_is_acknowledged(
        self, small_fs: Path
    ) -> None:
        path = small_fs / "audit.jsonl"
        calls: list[int] = []
        with AuditLog(path, flush_interval_s=5.0, retry_s=0.01) as log:
            log.write("e", n=0)
            assert log.flush() == 1
            filler = fill(small_fs)
            log.write("e", n=1, pad="q" * 4000)  # new pages: the full disk refuses
            assert log.flush(on_written=lambda: calls.append(1)) == 1
            assert calls == [1] and log.status()["failing"]
            filler.unlink()
            assert log.flush(on_written=lambda: calls.append(2)) == 2
        assert calls == [1, 2]

    def test_a_callback_that_raises_reaches_the_flusher_after_the_flush(
        self, tmp_path: Path
    ) -> None:
        """The hand-off is the caller's code: its error is the caller's, raised once the flush
        is over, and the record is still acknowledged durable."""
        path = tmp_path / "audit.jsonl"

        def boom() -> None:
            raise RuntimeError("the caller's own bug")

        with AuditLog(path, flush_interval_s=5.0) as log:
            log.write("invoke", mark="kept")
            with pytest.raises(RuntimeError, match="the caller's own bug"):
                log.flush(on_written=boom)
            assert log.flush() == 1
        assert b'"mark":"kept"' in _on_disk(path)

    def test_the_null_audit_calls_it_at_once(self) -> None:
        calls: list[int] = []
        assert NullAudit().flush(on_written=lambda: calls.append(1)) == 0
        assert calls == [1]


def _switches(tid: int) -> int:
    """The thread's voluntary context switches so far (each sleep that ended in a wake-up)."""
    with open(f"/proc/self/task/{tid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in /proc status")


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux /proc")
def test_flushes_do_not_wake_the_idle_writer_thread(tmp_path: Path) -> None:
    """The end of each flush's attempt is announced to the other flushers only: the writer
    thread, idle between its polls, sleeps through 200 flushes in a row (it used to be woken
    by each, a futex call and a GIL hand-off between a call's fsync and its answer)."""
    with AuditLog(tmp_path / "audit.jsonl", flush_interval_s=30.0) as log:
        tid = log._thread.native_id
        assert tid is not None
        log.write("invoke", n=-1)
        log.flush()
        before = _switches(tid)
        for i in range(200):
            log.write("invoke", n=i)
            log.flush()
        woken = _switches(tid) - before
        assert log.acknowledged == 201
    assert woken <= 5, f"the idle writer was woken {woken} times by 200 flushes"


@native_skill(name="echo", version="1.0.0", description="Echoes.", input_schema={"type": "object"})
def echo(n: int = 0) -> dict[str, Any]:
    return {"n": n}


_napping = threading.Event()


@native_skill(
    name="nap", version="1.0.0", description="Sleeps a little.", input_schema={"type": "object"}
)
def nap(seconds: float = 0.3) -> str:
    _napping.set()
    time.sleep(seconds)
    return "woke"


class _Skills:
    @hookimpl
    def bastion_skills(self) -> list[Any]:
        return [echo, nap]


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("BASTION_LOAD_PLUGINS", "")
    pol = load_policy(text=f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n')
    with Kernel(pol, plugins=[_Skills()]) as k:
        yield k


def test_ainvoke_recorded_gives_the_result_then_the_record_on_disk(kernel: Kernel) -> None:
    path = kernel.audit.path
    assert path is not None

    async def scenario() -> None:
        for i in range(20):
            args = {"n": i}
            result, recorded = await kernel.ainvoke_recorded("echo", args)
            assert result.ok and result.output == args
            await recorded
            assert arguments_hash(args).encode() in _on_disk(path)

    asyncio.run(scenario())
    assert [r["outcome"] for r in read_audit(path, event="invoke")] == ["ok"] * 20


def test_ainvoke_recorded_of_an_unknown_skill_is_a_typed_result(kernel: Kernel) -> None:
    async def scenario() -> None:
        result, recorded = await kernel.ainvoke_recorded("nope", {})
        await recorded
        assert not result.ok and result.error is not None
        assert result.error.code == "NOT_FOUND"

    asyncio.run(scenario())


def test_a_cancelled_ainvoke_recorded_raises_only_after_the_call_ended(kernel: Kernel) -> None:
    """As ``ainvoke``: the task's ``CancelledError`` comes once the call has ended, so its
    record is already written (a native skill cannot be interrupted)."""
    path = kernel.audit.path
    assert path is not None

    async def scenario() -> None:
        _napping.clear()
        task = asyncio.create_task(kernel.ainvoke_recorded("nap", {"seconds": 0.3}))
        while not _napping.is_set():
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        kernel.audit.flush()
        assert [r["outcome"] for r in read_audit(path, event="invoke")] == ["ok"]

    asyncio.run(scenario())
