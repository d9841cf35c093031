"""The durability promise as docs/policy.md writes it: a queued record reaches the file by
itself, within the batching window, with no ``flush()`` and no further records."""

from __future__ import annotations

import json
import time
from pathlib import Path

from bastion.audit import AuditLog


def test_a_lone_record_is_written_without_a_flush(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    try:
        log.write("decision", action="lonely")
        # A liveness bound, not a timing assertion: the promise is one flush interval (0.2 s).
        end = time.monotonic() + 30
        while time.monotonic() < end and not path.read_bytes():
            time.sleep(0.02)
        lines = path.read_text().splitlines()
        assert [json.loads(line)["action"] for line in lines] == ["lonely"]
    finally:
        log.close()


def test_each_of_several_spaced_records_is_written_by_itself(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    try:
        for i in range(3):
            log.write("decision", n=i)
            end = time.monotonic() + 30
            while time.monotonic() < end and len(path.read_text().splitlines()) <= i:
                time.sleep(0.02)
        assert [json.loads(line)["n"] for line in path.read_text().splitlines()] == [0, 1, 2]
    finally:
        log.close()
