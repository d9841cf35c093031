"""The kernel with ``[workers]``: sandboxed runtimes go to the pool, the pipeline stays the same
(output sanitized, errors scrubbed, the kill audited), and ``isolation = "thread"`` keeps calls
in-process."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion import Kernel, load_policy
from bastion.audit import read_audit
from bastion.errors import PolicyError
from bastion.sandbox.workers import ProcessExecutor, landlock

SKILLS = {
    "hello": "def run(name: str) -> dict:\n    return {'hi': name}\n",
    "sleepy": "import time\n\ndef run() -> dict:\n    time.sleep(30)\n    return {}\n",
}


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("py-pack")
    for name, source in SKILLS.items():
        d = folder / name
        d.mkdir()
        (d / "skill.py").write_text(source)
        (d / "skill.toml").write_text(
            f'name = "{name}"\nversion = "1.0.0"\ndescription = "{name}"\nruntime = "python"\n'
            'entry = "skill.py"\ninput_schema = { type = "object" }\n[limits]\ntimeout_ms = 400\n'
        )
    (folder / "bastion-pack.toml").write_text(
        'name = "py-test"\nversion = "1.0.0"\nskills = ["hello", "sleepy"]\n'
    )
    return folder


def _kernel(pack: Path, tmp_path: Path, workers: str) -> Kernel:
    pol = load_policy(text=f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n[workers]\n{workers}\n')
    return Kernel(pol, pack_paths=[pack], entry_points=False)


@pytest.fixture
def kernel(pack: Path, tmp_path: Path, runner_loaded: None) -> Iterator[Kernel]:
    k = _kernel(pack, tmp_path, "count = 1")
    yield k
    k.close()


def test_sandboxed_runtimes_run_in_workers(kernel: Kernel) -> None:
    assert isinstance(kernel.executors["python"], ProcessExecutor)
    res = kernel.invoke("hello", {"name": "w"})
    assert res.ok, res.error
    assert res.output == {"hi": "w"}
    assert kernel.workers is not None and len(kernel.workers.pids()) == 1


def test_blocked_skill_times_out_and_the_kill_is_audited(kernel: Kernel, tmp_path: Path) -> None:
    res = kernel.invoke("sleepy", {})
    assert not res.ok and res.error is not None
    assert res.error.code == "TIMEOUT"
    assert "400 ms" in res.error.message
    kernel.audit.close()
    events = [e for e in read_audit(tmp_path / "audit.jsonl") if e.get("event") == "worker"]
    assert events and events[0]["skill"] == "sleepy" and events[0]["reason"] == "timeout"
    assert kernel.invoke("hello", {"name": "next"}).output == {"hi": "next"}


def test_cancel_through_the_kernel(kernel: Kernel) -> None:
    cancel = threading.Event()
    timer = threading.Timer(0.1, cancel.set)
    timer.start()
    try:
        res = kernel.invoke("sleepy", {}, cancel=cancel)
    finally:
        timer.cancel()
    assert res.error is not None and res.error.code == "CANCELLED"


def test_thread_isolation_keeps_calls_in_process(
    pack: Path, tmp_path: Path, runner_loaded: None
) -> None:
    with _kernel(pack, tmp_path, 'isolation = "thread"') as k:
        assert k.workers is None
        assert not isinstance(k.executors["python"], ProcessExecutor)
        assert k.invoke("hello", {"name": "t"}).output == {"hi": "t"}


def test_bad_workers_section_is_refused_with_the_value() -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(text='[workers]\nisolation = "vm"\n')
    assert "workers.isolation" in str(info.value) and "'vm'" in str(info.value)


def test_doctor_reports_the_worker_layer(tmp_path: Path) -> None:
    policy = tmp_path / "bastion.toml"
    policy.write_text(f'[audit]\npath = "{tmp_path / "a.jsonl"}"\n[workers]\nseccomp = false\n')
    bastion = Path(sys.executable).parent / "bastion"
    proc = subprocess.run(
        [str(bastion), "--policy", str(policy), "doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    assert checks["workers"]["detail"].startswith('isolation = "process"')
    expected = "ABI" if landlock.abi_version() else "NOT available"
    assert expected in checks["landlock"]["detail"]
    assert checks["seccomp"]["detail"] == "off ([workers] seccomp = false)"


def test_metrics_count_worker_kills(kernel: Kernel) -> None:
    assert kernel.invoke("sleepy", {}).error is not None
    text = kernel.metrics_text()
    assert 'bastion_worker_events_total{event="killed_timeout"} 1.0' in text
    assert 'bastion_skill_calls_total{outcome="TIMEOUT",skill="sleepy"} 1.0' in text
