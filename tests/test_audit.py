"""The audit log: durability across SIGKILL, torn lines, rotation order, and no secrets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.audit import AuditLog, NullAudit, read_audit
from bastion.sanitize import SanitizeConfig, Sanitizer

CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from bastion.audit import AuditLog

    log = AuditLog(Path(sys.argv[1]), flush_interval_s=0.01, batch=16,
                   rotate_bytes=int(sys.argv[2]), keep=1000)
    i = 0
    while True:
        for _ in range(50):
            log.write("invoke", seq=i, skill="s", pad="x" * 100)
            i += 1
        acked = log.flush()
        print(acked, flush=True)
""")


def run_child_and_kill(path: Path, rotate_bytes: int, after_acks: int) -> int:
    """Start a writer, SIGKILL it once it acknowledged ``after_acks`` flushes; return the last
    acknowledged count it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(rotate_bytes)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    last = 0
    for seen, line in enumerate(proc.stdout, start=1):
        last = int(line)
        if seen >= after_acks:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    for line in proc.stdout:  # anything printed before the kill landed
        if line.strip():
            last = max(last, int(line))
    return last


def test_sigkill_never_loses_an_acknowledged_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    acked = run_child_and_kill(path, rotate_bytes=1 << 30, after_acks=60)
    reader = read_audit(path)
    records = list(reader)
    assert acked >= 60 * 50
    assert len(records) >= acked
    assert reader.corrupt == 0
    assert [r["seq"] for r in records] == list(range(len(records)))


def test_sigkill_with_rotation_keeps_order_and_count(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    acked = run_child_and_kill(path, rotate_bytes=20_000, after_acks=40)
    assert len(list(tmp_path.glob("audit.jsonl.*"))) > 3
    records = list(read_audit(path))
    assert len(records) >= acked
    assert [r["seq"] for r in records] == list(range(len(records)))


def test_a_torn_last_line_is_skipped_and_terminated_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        log.write("invoke", n=1)
        log.write("invoke", n=2)
    with path.open("ab") as f:
        f.write(b'{"ts": "2024-01-01T00:00:00Z", "event": "inv')  # torn by a crash
    reader = read_audit(path)
    assert [r["n"] for r in reader] == [1, 2]
    assert (reader.torn, reader.corrupt) == (1, 0)
    with AuditLog(path) as log:
        log.write("invoke", n=3)
    reader = read_audit(path)
    assert [r["n"] for r in reader] == [1, 2, 3]
    assert (reader.torn, reader.corrupt) == (0, 1)


def test_garbage_files_never_raise(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'\xff\xfe\x00garbage\n[1,2]\n{"event": "ok", "ts": "x"}\n' + b"[" * 100_000)
    (tmp_path / "audit.jsonl.1").mkdir()  # unreadable as a file
    reader = read_audit(path)
    assert [r["event"] for r in reader] == ["ok"]
    assert reader.corrupt == 2 and reader.torn == 1 and reader.unreadable == 1
    assert list(read_audit(tmp_path / "missing.jsonl")) == []


def test_rotation_keeps_only_keep_files_oldest_dropped(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, rotate_bytes=2_000, keep=3, batch=1) as log:
        for i in range(400):
            log.write("e", i=i, pad="y" * 50)
            if i % 10 == 0:
                log.flush()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "audit.jsonl",
        "audit.jsonl.1",
        "audit.jsonl.2",
        "audit.jsonl.3",
        "audit.jsonl.lock",  # the rotation lock that processes sharing the log take
    ]
    seqs = [r["i"] for r in read_audit(path)]
    assert seqs == list(range(seqs[0], 400))  # a contiguous, ordered tail
    assert seqs[0] > 0


def test_records_have_rfc3339_utc_time_and_filters_work(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    before = datetime.now(UTC) - timedelta(seconds=1)
    with AuditLog(path) as log:
        log.write("invoke", skill="a", ts="spoofed", event="spoofed")
        log.write("decision", skill="b")
        log.write("invoke", skill="b")
        assert log.flush() == 3
    recs = list(read_audit(path))
    for r in recs:
        ts = datetime.fromisoformat(r["ts"])
        assert r["ts"].endswith("Z") and ts.utcoffset() == timedelta(0) and ts >= before
    assert recs[0]["event"] == "invoke" and recs[0]["field_event"] == "spoofed"
    assert [r["skill"] for r in read_audit(path, event="invoke")] == ["a", "b"]
    assert [r["event"] for r in read_audit(path, skill="b")] == ["decision", "invoke"]
    assert list(read_audit(path, since=datetime.now(UTC) + timedelta(hours=1))) == []
    assert len(list(read_audit(path, since=before.isoformat()))) == 3


@settings(max_examples=40, deadline=None)
@given(
    # Printable, no surrounding white space: drawn from letters, digits, punctuation and symbols
    # directly (filtering general text discarded too many examples).
    st.text(alphabet=st.characters(categories=("L", "N", "P", "S")), min_size=8, max_size=30),
    st.text(max_size=30),
)
def test_secret_values_never_reach_the_file(secret: str, noise: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "audit.jsonl"
        with AuditLog(path, redact={secret}) as log:
            log.write(
                "invoke",
                detail=f"{noise}{secret}{noise}",
                nested={"x": [secret]},
                api_key="sk-whatever-value",
                token_count=12,
            )
            log.write("invoke", **{f"k{secret}": 1})
        raw = path.read_bytes().decode("utf-8")
        assert secret not in raw
        assert json.dumps(secret)[1:-1] not in raw
        assert "sk-whatever-value" not in raw
        recs = list(read_audit(path))
        assert recs[0]["token_count"] == 12 and recs[0]["api_key"] == "[REDACTED:FIELD]"


def test_a_sanitizer_can_be_given_and_odd_values_are_written(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    san = Sanitizer(SanitizeConfig(redact_paths=(str(tmp_path),)))
    loop: list[object] = []
    loop.append(loop)
    with AuditLog(path, redact=san) as log:
        log.write("e", where=tmp_path / "x", s={1}, when=datetime(2024, 1, 1, tzinfo=UTC))
        log.write("e", loop=loop)  # not serializable: recorded as such, not raised
    recs = list(read_audit(path))
    assert recs[0]["where"] == "[path]/x" and recs[0]["s"] == "{1}"
    assert "unserializable" in recs[1]


def test_concurrent_writers_lose_nothing_even_when_the_queue_overflows(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, max_pending=5, batch=4, flush_interval_s=0.05) as log:

        def writer(w: int) -> None:
            for i in range(300):
                log.write("e", w=w, i=i)

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert log.flush() == 8 * 300
    recs = list(read_audit(path))
    assert len(recs) == 8 * 300
    for w in range(8):
        assert [r["i"] for r in recs if r["w"] == w] == list(range(300))  # per-writer order


def test_writing_after_close_still_lands(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.close()
    log.close()
    log.write("late", n=1)
    assert [r["event"] for r in read_audit(path)] == ["late"]


def test_a_lost_descriptor_is_reopened_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    assert log._fd is not None
    os.close(log._fd)  # the descriptor dies under the log
    log.write("e", n=1)
    assert log.flush(timeout=10) == 1
    log.close()
    assert [r["n"] for r in read_audit(path)] == [1]


def test_null_audit_has_the_same_interface() -> None:
    with NullAudit() as log:
        log.write("e", x=1)
        assert log.flush() == 0
    assert log.path is None


def test_follow_yields_new_records_across_rotation(tmp_path: Path) -> None:
    import threading
    import time

    from bastion.audit import AuditLog, read_audit

    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, rotate_bytes=2048, keep=3)
    log.write("invoke", skill="old")
    log.flush()
    reader = read_audit(path, event="invoke")
    assert [r["skill"] for r in reader] == ["old"]
    stream = reader.follow(poll_s=0.005, stop=lambda: len(seen) >= 60 or time.monotonic() > end)
    seen: list[str] = []
    end = time.monotonic() + 60  # bounds the loops; nothing here asserts a duration

    def writer() -> None:
        # Batches of ~1 KiB, each waiting until the follower has it, so that at most one
        # rotation (2 KiB files) happens between two of the follower's polls.
        for batch in range(12):
            for i in range(batch * 5, batch * 5 + 5):
                log.write("invoke", skill=f"s{i}", pad="x" * 100)
                log.write("http", skill=f"s{i}")
            log.flush()
            while len(seen) < batch * 5 + 5 and time.monotonic() < end:
                time.sleep(0.005)

    t = threading.Thread(target=writer)
    t.start()
    for rec in stream:
        seen.append(rec["skill"])
    t.join()
    log.close()
    assert len(list(tmp_path.glob("audit.jsonl.*"))) >= 1, "the log should have rotated"
    # Every new invoke record, in order, none twice, none from before, no other events.
    assert seen == [f"s{i}" for i in range(60)]
