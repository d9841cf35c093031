"""A Python skill cannot leave a symlink in a writable mount.

The Python runner is a component; wasmtime-py 50 cannot shadow one function of
``wasi:filesystem/types`` (see ``sandbox/linksweep.py``), so the host removes, after the call,
every symlink the call created (walking by directory descriptors, never following a link).
Symlinks the operator made before the call stay. Hard links can only name files of mutable
mounts (wasmtime checks both ends), never a file of a read-only mount.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from bastion.executor import Capabilities, Mount
from bastion.sandbox.python_exec import PythonExecutor
from tests.python_skills.conftest import MakeSkill

SOURCE = """
import os

def run() -> dict:
    out = {}
    os.makedirs("/w/deep/er", exist_ok=True)
    for name, target in [("up", "../../../../../../etc/passwd"), ("abs", "/etc/passwd"),
                         ("inside", "file.txt"), ("deep/er/up", "../../../../x"),
                         ("chain", "."), ("deep/hop", "../chain/chain/../../../etc")]:
        try:
            os.symlink(target, "/w/" + name)
            out[name] = "made"
        except OSError as e:
            out[name] = e.errno
    try:
        os.link("/r/ro.txt", "/w/ro-hard")
        out["ro_hard"] = "made"
    except OSError as e:
        out["ro_hard"] = e.errno
    out["seen"] = sorted(os.listdir("/w"))
    return out
"""


def test_symlinks_left_by_the_call_are_removed(
    python_executor: PythonExecutor, skill: MakeSkill, tmp_path: Path
) -> None:
    w = tmp_path / "w"
    r = tmp_path / "r"
    w.mkdir()
    r.mkdir()
    (w / "file.txt").write_text("mine")
    (r / "ro.txt").write_text("read only")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, w / "operator-link")  # the operator's own link, made before the call
    old = time.time() - 3600
    os.utime(w / "operator-link", (old, old), follow_symlinks=False)
    time.sleep(1.2)  # past CTIME_SLACK_NS: the operator's link is older than the call
    caps = Capabilities(mounts=(Mount("/w", w, writable=True), Mount("/r", r)))
    out = json.loads(python_executor.execute(skill(SOURCE, caps=caps)))
    # The guest could create relative links (wasmtime allows it), so the sweep is what holds.
    assert out["up"] == "made" and "up" in out["seen"]
    assert out["ro_hard"] != "made"  # a read-only mount's file cannot be linked in
    left = sorted(str(p.relative_to(w)) for p in w.rglob("*") if p.is_symlink())
    assert left == ["operator-link"]
    assert (w / "file.txt").read_text() == "mine" and (r / "ro.txt").read_text() == "read only"
    assert (w / "deep" / "er").is_dir()
