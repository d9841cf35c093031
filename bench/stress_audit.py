"""Stress the audit log under faults: 16 concurrent callers while the file rotates, is moved away
and restored, and the file system fills up and is freed; then count.

Every invocation must have exactly one readable ``invoke`` record, or have been refused with
``AUDIT_UNAVAILABLE``; records the log had to drop are counted by the log itself (``dropped``),
never silent. Needs root (it mounts a small tmpfs); prints the counts.

    sudo .venv/bin/python bench/stress_audit.py [--seconds 10] [--callers 16]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bastion import Kernel, hookimpl, load_policy, native_skill
from bastion.audit import AuditLog


@native_skill(name="echo", version="1.0.0", description="Echo.", input_schema={"type": "object"})
def echo(**kw: Any) -> dict[str, Any]:
    return kw


class Skills:
    @hookimpl
    def bastion_skills(self) -> list[Any]:
        return [echo]


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "ab", buffering=0) as f, contextlib.suppress(OSError):
        while f.write(b"\0" * 65536):
            pass
    return filler


def chaos(folder: Path, path: Path, stop: threading.Event, counts: Counter[str]) -> None:
    """Cycle: move the file away and restore it (without clobbering), fill and free the disk."""
    n = 0
    while not stop.is_set():
        away = folder / f"away-{n}.jsonl"
        if path.exists():
            subprocess.run(["mv", str(path), str(away)], check=False)
            counts["moved_away"] += 1
        stop.wait(0.15)
        if subprocess.run(["mv", "-n", str(away), str(path)], check=False).returncode == 0:
            counts["restore_attempts"] += 1
        stop.wait(0.15)
        filler = fill(folder)
        counts["disk_filled"] += 1
        stop.wait(0.4)
        filler.unlink()
        counts["disk_freed"] += 1
        stop.wait(0.3)
        n += 1


def read_all(folder: Path) -> tuple[Counter[str], int]:
    """Invoke records per invocation id over every file in ``folder``; and unreadable lines."""
    per_id: Counter[str] = Counter()
    bad = 0
    for p in folder.iterdir():
        if not p.is_file() or p.name in ("filler", "audit.jsonl.lock"):
            continue
        for raw in p.read_bytes().split(b"\n"):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except ValueError:
                bad += 1
                continue
            if rec.get("event") == "invoke":
                per_id[rec["invocation_id"]] += 1
    return per_id, bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--callers", type=int, default=16)
    ap.add_argument("--size", default="64m", help="tmpfs size")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.stderr.write("stress_audit: needs root to mount a tmpfs\n")
        return 2
    mnt = Path(tempfile.mkdtemp(prefix="bastion-stress-"))
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={args.size}", "tmpfs", str(mnt)], check=True
    )
    try:
        path = mnt / "audit.jsonl"
        audit = AuditLog(path, rotate_bytes=256 * 1024, keep=10_000, buffer=500, retry_s=0.05)
        kernel = Kernel(load_policy(text=""), plugins=[Skills()], entry_points=False, audit=audit)
        outcomes: Counter[str] = Counter()
        ran: list[str] = []
        refused: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()
        faults: Counter[str] = Counter()

        def caller(i: int) -> None:
            n = 0
            while not stop.is_set():
                res = kernel.invoke("echo", {"caller": i, "n": n})
                n += 1
                with lock:
                    code = "ok" if res.ok else res.error.code  # type: ignore[union-attr]
                    outcomes[code] += 1
                    (refused if code == "AUDIT_UNAVAILABLE" else ran).append(res.invocation_id)
                if code == "AUDIT_UNAVAILABLE":
                    time.sleep(0.01)  # a client backing off a retryable refusal

        threads = [threading.Thread(target=caller, args=(i,)) for i in range(args.callers)]
        mover = threading.Thread(target=chaos, args=(mnt, path, stop, faults))
        started = time.monotonic()
        for t in [*threads, mover]:
            t.start()
        time.sleep(args.seconds)
        stop.set()
        for t in [*threads, mover]:
            t.join()
        elapsed = time.monotonic() - started
        (mnt / "filler").unlink(missing_ok=True)
        for _ in range(50):  # the disk is free again: the kept records go out
            audit.flush(timeout=5)
            if not audit.status()["failing"]:
                break
        kernel.close()
        status = audit.status()  # after close: records still unwritten then count as dropped
        per_id, bad = read_all(mnt)
        once = sum(1 for i in ran if per_id.get(i) == 1)
        missing = sum(1 for i in ran if per_id.get(i, 0) == 0)
        twice = sum(1 for i in ran if per_id.get(i, 0) > 1)
        refused_with_record = sum(1 for i in refused if per_id.get(i, 0) > 0)
        report = {
            "seconds": round(elapsed, 1),
            "callers": args.callers,
            "invocations": len(ran) + len(refused),
            "outcomes": dict(outcomes),
            "ran_with_exactly_one_record": once,
            "ran_without_record": missing,
            "ran_with_several_records": twice,
            "refused_AUDIT_UNAVAILABLE": len(refused),
            "refused_with_a_record": refused_with_record,
            "dropped_counted_by_the_log": status["dropped"],
            "failed_write_attempts": status["failed_writes"],
            "reopened": status["reopened"],
            "torn_or_unreadable_lines": bad,
            "rotated_files": len(list(mnt.glob("audit.jsonl.[0-9]*"))),
            "faults": dict(faults),
        }
        # Whether the writer felt each fault (a fill can fall between two batches).
        felt = {
            "rotation": report["rotated_files"] > 0,
            "moved_away": status["reopened"] > 0,
            "disk_full": status["failed_writes"] > 0,
        }
        report["faults_felt"] = felt
        print(json.dumps(report, indent=2))
        ok = missing == status["dropped"] and twice == 0 and refused_with_record == 0
        print("RESULT:", "every call accounted for" if ok else "MISMATCH")
        if not all(felt.values()):
            print("NOTE: not every fault was felt by the writer in this run; run longer")
        return 0 if ok else 1
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        with contextlib.suppress(OSError):
            mnt.rmdir()


if __name__ == "__main__":
    raise SystemExit(main())
