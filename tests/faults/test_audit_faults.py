"""The audit log under real faults: failed rotations, files moved, deleted or replaced by another
process, full file systems (a real tmpfs), /dev/full, FIFOs, two processes sharing one log and
SIGKILL during rotation. Each test reproduces a fault that switched the log off (or hung it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from bastion import Kernel, PolicyError, hookimpl, load_policy, native_skill
from bastion.audit import AuditLog, AuditPathError, read_audit
from tests.faults.diskfill import fill

OBJ = {"type": "object"}


@native_skill(name="echo", version="1.0.0", description="Echo.", input_schema=OBJ)
def echo(**kw: Any) -> dict[str, Any]:
    return kw


class Skills:
    @hookimpl
    def bastion_skills(self) -> list[Any]:
        return [echo]


def kernel(audit_path: Path, extra: str = "") -> Kernel:
    text = f'[audit]\npath = "{audit_path}"\n{extra}'
    return Kernel(load_policy(text=text), plugins=[Skills()], entry_points=False)


def sh(*cmd: str) -> None:
    """Run a command in another process (the fault comes from outside the log's process)."""
    subprocess.run(list(cmd), check=True)


def seqs(path: Path, key: str = "i") -> list[int]:
    return [r[key] for r in read_audit(path) if key in r]


# -- rotation ----------------------------------------------------------------------------------


def test_a_failed_rotation_keeps_writing_to_the_current_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    for i in (1, 2):  # non-empty directories where the rotated files go: every rename fails
        (tmp_path / f"audit.jsonl.{i}").mkdir()
        (tmp_path / f"audit.jsonl.{i}" / "x").write_text("x")
    with AuditLog(path, rotate_bytes=1000, keep=2, batch=1) as log:
        for i in range(60):
            log.write("e", i=i, pad="p" * 50)
            if i % 10 == 9:
                log.flush()
        assert log.flush() == 60
        assert log.failed == 0 and log.accepting
    assert [json.loads(line)["i"] for line in path.read_text().splitlines()] == list(range(60))


def test_a_file_moved_away_is_noticed_and_reopened(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        for i in range(5):
            log.write("e", i=i)
        log.flush()
        sh("mv", str(path), str(tmp_path / "moved.jsonl"))  # logrotate without copytruncate
        for i in range(5, 10):
            log.write("e", i=i)
        assert log.flush() == 10
    assert seqs(path) == list(range(5, 10))
    assert [json.loads(x)["i"] for x in (tmp_path / "moved.jsonl").read_text().splitlines()] == [
        0,
        1,
        2,
        3,
        4,
    ]


def test_a_deleted_folder_is_recreated(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "audit.jsonl"
    with AuditLog(path) as log:
        log.write("e", i=0)
        log.flush()
        sh("rm", "-rf", str(tmp_path / "logs"))
        log.write("e", i=1)
        assert log.flush() == 2
    assert seqs(path) == [1]


def test_a_replaced_file_is_reopened_and_its_torn_tail_ended(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        log.write("e", i=0)
        log.flush()
        other = tmp_path / "other"
        other.write_text('{"event":"foreign","i":-1}\n{"torn": ')  # ends mid-record
        sh("mv", str(other), str(path))
        log.write("e", i=1)
        assert log.flush() == 2
    reader = read_audit(path)
    assert [r["i"] for r in reader] == [-1, 1]
    assert reader.corrupt == 1  # the torn foreign line, kept apart from the next record


# -- full disks -------------------------------------------------------------------------------


def test_disk_full_mid_batch_is_retried_without_gluing_records(small_fs: Path) -> None:
    path = small_fs / "audit.jsonl"
    with AuditLog(path, batch=1000, flush_interval_s=5, retry_s=0.05) as log:
        filler = fill(small_fs, leave=1000)
        for i in range(40):
            log.write("e", i=i, pad="q" * 80)  # ~4 KiB in one batch: it cannot all fit
        log.flush()
        assert log.failed >= 1
        status = log.status()
        assert status["failing"] and status["buffered"] > 0 and not status["writable"]
        filler.unlink()
        log.flush()
        assert log.flush() == 40
        assert not log.status()["failing"]
    reader = read_audit(path)
    assert [r["i"] for r in reader] == list(range(40))  # each exactly once, in order
    assert reader.corrupt <= 1  # at most the torn piece of the failed write, terminated


def test_a_full_disk_stops_skills_after_the_buffer_and_recovers(small_fs: Path) -> None:
    path = small_fs / "audit.jsonl"
    with kernel(path, "buffer = 3\n") as k:
        assert k.invoke("echo", {"n": -1}).ok
        k.audit.flush()
        filler = fill(small_fs)
        results = []
        for n in range(40):  # time passes between calls: the flusher tries the disk each time
            results.append(k.invoke("echo", {"n": n}))
            k.audit.flush()
        codes = [r.error.code if r.error else "ok" for r in results]
        assert "AUDIT_UNAVAILABLE" in codes
        refused = next(r for r in results if not r.ok)
        assert refused.error is not None and refused.error.retryable
        health = k.health()
        assert health["ok"] is False and health["audit"]["writable"] is False
        assert health["audit"]["refused_calls"] == codes.count("AUDIT_UNAVAILABLE")
        assert k.readiness()["audit"] is False
        filler.unlink()
        k.audit.flush()
        assert k.readiness()["audit"] is True
        assert k.invoke("echo", {"n": 99}).ok
        k.audit.flush()
        assert k.health()["audit"]["dropped"] == 0
    ran = [-1] + [n for n, c in enumerate(codes) if c == "ok"] + [99]
    assert sorted(r["args_sha256"] is not None for r in read_audit(path, event="invoke")) == [
        True
    ] * len(ran)  # one readable record per call that ran, none for the refused


def test_on_failure_continue_runs_on_and_counts_the_dropped(small_fs: Path) -> None:
    path = small_fs / "audit.jsonl"
    log = AuditLog(path, buffer=2, max_buffered=5, retry_s=0.01)
    policy = load_policy(text='[audit]\non_failure = "continue"\n')
    with Kernel(policy, plugins=[Skills()], entry_points=False, audit=log) as k:
        fill(small_fs)
        for n in range(40):  # enough records to need new pages of the full file system
            assert k.invoke("echo", {"n": n}).ok
            k.audit.flush()
        info = k.health()["audit"]
        assert info["failing"] and info["buffered"] == 5
        assert info["dropped"] > 0 and k.readiness()["audit"] is True


def test_dev_full_under_the_path_at_runtime_is_reported_and_healed(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with kernel(path, "buffer = 2\n") as k:
        assert k.invoke("echo", {}).ok
        k.audit.flush()
        sh("ln", "-sf", "/dev/full", str(path))  # another process swaps the file for a device
        codes = []
        for _ in range(8):
            codes.append(k.invoke("echo", {}).error)
            k.audit.flush()
        assert any(e is not None and e.code == "AUDIT_UNAVAILABLE" for e in codes)
        audit = k.health()["audit"]
        assert audit["writable"] is False and "device" in (audit["last_error"] or "")
        sh("rm", str(path))
        k.audit.flush()
        assert k.invoke("echo", {}).ok
        assert k.audit.flush() >= 2


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_a_non_file_audit_path_is_refused_at_start_never_a_hang(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "audit.jsonl"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        path.symlink_to("/dev/full")
    with pytest.raises(AuditPathError, match="not a regular file"):
        AuditLog(path)
    with pytest.raises(PolicyError, match="not a regular file"):
        kernel(path)
    policy = tmp_path / "bastion.toml"
    policy.write_text(f'[audit]\npath = "{path}"\n')
    # A subprocess with a timeout: a hang is a failure here, not a stuck test run.
    proc = subprocess.run(
        [sys.executable, "-m", "bastion.cli", "--policy", str(policy), "skills"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "not a regular file" in proc.stderr and "Traceback" not in proc.stderr


# -- processes ---------------------------------------------------------------------------------

WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from bastion.audit import AuditLog

    log = AuditLog(Path(sys.argv[1]), flush_interval_s=0.005, batch=8,
                   rotate_bytes=int(sys.argv[3]), keep=10_000)
    for i in range(int(sys.argv[4])):
        log.write("e", w=sys.argv[2], i=i, pad="z" * 60)
        if i % 50 == 0:
            print(log.flush(), flush=True)
    print(log.flush(), flush=True)
    log.close()
""")


def test_two_processes_share_one_log_and_rotate_without_loss(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), w, "8000", "1500"],
            stdout=subprocess.DEVNULL,
        )
        for w in ("a", "b")
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0
    assert len(list(tmp_path.glob("audit.jsonl.[0-9]*"))) > 5
    reader = read_audit(path)
    recs = list(reader)
    assert reader.corrupt == 0 and reader.torn == 0
    for w in ("a", "b"):
        assert [r["i"] for r in recs if r["w"] == w] == list(range(1500))


def test_sigkill_during_rotation_leaves_a_log_that_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    acked = 0
    for _round in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), "k", "1500", "1000000"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        last = 0
        for n, line in enumerate(proc.stdout):
            last = int(line)
            if n >= 15:  # rotations happen every few records: the kill lands near one
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait()
        acked += last
    with AuditLog(path, rotate_bytes=1500, keep=10_000) as log:
        log.write("e", w="after", i=0)
        assert log.flush() == 1
    reader = read_audit(path)
    recs = list(reader)
    assert reader.corrupt == 0
    assert sum(r["w"] == "k" for r in recs) >= acked
    assert recs[-1]["w"] == "after"
    assert all(p.is_file() for p in tmp_path.glob("audit.jsonl*"))


def test_concurrent_writers_and_an_outside_mover_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    moved: list[Path] = []
    with AuditLog(path, flush_interval_s=0.002) as log:
        stop = threading.Event()

        def mover() -> None:
            n = 0
            while not stop.is_set():
                dest = tmp_path / f"moved-{n}.jsonl"
                if path.exists():
                    sh("mv", str(path), str(dest))
                    moved.append(dest)
                    n += 1
                stop.wait(0.02)

        t = threading.Thread(target=mover)
        t.start()
        writers = [
            threading.Thread(target=lambda w=w: [log.write("e", w=w, i=i) for i in range(500)])
            for w in range(4)
        ]
        for w in writers:
            w.start()
        for w in writers:
            w.join()
        stop.set()
        t.join()
        assert log.flush() == 2000
    recs = [json.loads(x) for p in [*moved, path] if p.exists() for x in p.read_text().splitlines()]
    assert sorted((r["w"], r["i"]) for r in recs) == sorted(
        (w, i) for w in range(4) for i in range(500)
    )


def test_doctor_and_run_tell_the_truth_on_a_full_disk(small_fs: Path, tmp_path: Path) -> None:
    policy = tmp_path / "bastion.toml"
    policy.write_text(f'[audit]\npath = "{small_fs / "audit.jsonl"}"\n')
    fill(small_fs)
    cli = [sys.executable, "-m", "bastion.cli", "--policy", str(policy)]
    doctor = subprocess.run(
        [*cli, "doctor", "--json"], capture_output=True, text=True, timeout=120, check=False
    )
    assert doctor.returncode == 1 and "Traceback" not in doctor.stderr
    (row,) = [c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "audit log"]
    assert row["ok"] is False and "NOT writable" in row["detail"]
    run = subprocess.run(
        [*cli, "run", "no_such_skill", "--input", "{}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 2, run.stderr
    assert "AUDIT_UNAVAILABLE" in run.stderr and "Traceback" not in run.stderr
