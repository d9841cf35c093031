"""The issue-12 stress run as a test: 16 concurrent callers while the audit file rotates, is
moved away and restored, and its tmpfs fills up and is freed; every invocation has exactly one
readable record or was refused with ``AUDIT_UNAVAILABLE``, and nothing is dropped silently.
The counts come from ``bench/stress_audit.py`` itself (the figures in docs/policy.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "stress_audit.py"


@pytest.mark.skipif(os.geteuid() != 0, reason="the stress run mounts a tmpfs: needs root")
def test_sixteen_callers_under_rotation_moves_and_a_full_disk_account_for_every_call() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--seconds", "6", "--callers", "16"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert "RESULT: every call accounted for" in proc.stdout
    report = json.loads(proc.stdout[proc.stdout.index("{") : proc.stdout.rindex("}") + 1])
    ran = report["outcomes"].get("ok", 0)
    assert ran > 0 and report["ran_with_exactly_one_record"] == ran
    assert report["ran_with_several_records"] == 0 and report["refused_with_a_record"] == 0
    assert report["ran_without_record"] == report["dropped_counted_by_the_log"]
    assert report["invocations"] == ran + report["refused_AUDIT_UNAVAILABLE"]
    faults = report["faults"]
    assert faults["moved_away"] > 0 and faults["disk_filled"] > 0  # the faults were injected
    assert report["faults_felt"]["rotation"] is True
