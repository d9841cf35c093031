"""Calls in a row: the pool grows to its size so they alternate between workers, every call
still gets a fresh instance, and where a worker drops its used store depends on the pool size
(a pool of one drops on the worker's dropper thread, a larger one on the call thread)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bastion.sandbox.workers import PoolStats
from bastion.sandbox.workers.wire import IDLE_PHASES
from tests.sandbox.guestbuild import build_wat
from tests.workers.conftest import MakePool, MakeRequest

COUNTER = (
    "_calls = []\n\n"
    "def run() -> dict:\n"
    "    _calls.append(1)\n"
    "    return {'calls_seen_by_this_instance': len(_calls)}\n"
)


def _thread_names(pid: int) -> set[str]:
    names = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                names.add(f.read().strip())
        except OSError:
            continue  # the thread ended meanwhile
    return names


def _wait_for(check: Callable[[], bool], seconds: float = 30.0) -> bool:
    end = time.monotonic() + seconds
    while not check():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def test_calls_in_a_row_grow_the_pool_to_its_size_and_each_gets_a_fresh_instance(
    make_pool: MakePool, pyskill: Callable[[str, str], Path], request_for: MakeRequest
) -> None:
    pool = make_pool(count=2)
    skill = pyskill("counter", COUNTER)
    outs = [json.loads(pool.run(request_for(skill))) for _ in range(40)]
    # Module state never survives a call: no instance served two.
    assert outs == [{"calls_seen_by_this_instance": 1}] * 40
    # The worker was still dropping and prewarming when the next call came: a second one
    # was started beside it, and never more than the size.
    assert _wait_for(lambda: len(pool.reports()) == 2)
    outs = [json.loads(pool.run(request_for(skill))) for _ in range(40)]
    assert outs == [{"calls_seen_by_this_instance": 1}] * 40
    assert len(pool.pids()) == 2
    assert pool.stats.started == 2 and pool.stats.crashed == 0


def test_a_pool_of_one_never_grows(
    make_pool: MakePool, pyskill: Callable[[str, str], Path], request_for: MakeRequest
) -> None:
    pool = make_pool(count=1)
    skill = pyskill("counter", COUNTER)
    for _ in range(20):
        assert json.loads(pool.run(request_for(skill))) == {"calls_seen_by_this_instance": 1}
    assert len(pool.pids()) == 1 and pool.stats.started == 1


def test_only_a_pool_of_one_drops_stores_on_a_dropper_thread(
    make_pool: MakePool, pyskill: Callable[[str, str], Path], request_for: MakeRequest
) -> None:
    skill = pyskill("counter", COUNTER)
    one, two = make_pool(count=1), make_pool(count=2)
    for pool in (one, two):
        assert json.loads(pool.run(request_for(skill))) == {"calls_seen_by_this_instance": 1}
    (alone,) = one.pids()
    if (os.cpu_count() or 1) > 1:
        assert _wait_for(lambda: "bastion-dropper" in _thread_names(alone), 10.0)
    else:  # one CPU: a thread of its own would not run beside the prewarm
        assert "bastion-dropper" not in _thread_names(alone)
    for pid in two.pids():
        names = _thread_names(pid)
        assert "bastion-ticker" in names  # the names are set (the call ran guest code)
        assert "bastion-dropper" not in names


PRINT_EMPTY = """
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "{}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 2))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"""


def test_calls_with_no_after_work_stay_on_one_worker(
    make_pool: MakePool, wasm_prepared: Callable[[Path], Path], skills_dir: Path,
    request_for: MakeRequest,
) -> None:  # fmt: skip
    # A WASI module leaves nothing to drop or prewarm after its answer: the answer itself says
    # idle, so the next call goes to the same worker and the pool has no reason to grow.
    module = skills_dir / "empty.wasm"
    module.write_bytes(build_wat(PRINT_EMPTY))
    wasm_prepared(module)
    pool = make_pool(count=2)
    for _ in range(60):
        assert pool.run(request_for(module, runtime="wasm")) == b"{}"
    assert len(pool.pids()) == 1 and pool.stats.started == 1


def test_workers_report_where_each_calls_cpu_went(
    make_pool: MakePool, pyskill: Callable[[str, str], Path], request_for: MakeRequest
) -> None:
    pool = make_pool(count=1)
    skill = pyskill("counter", COUNTER)
    for _ in range(6):
        assert json.loads(pool.run(request_for(skill))) == {"calls_seen_by_this_instance": 1}
        time.sleep(0.05)  # the idle frame (with the figures) comes after the prewarm
    pool.run(request_for(skill))  # reads the last idle frame before it sends this call
    stats = pool.stats
    assert stats.phase_calls >= 6
    spent = dict(zip(IDLE_PHASES, stats.phase_cpu_ns, strict=True))
    # Running the guest and making the next instance both take CPU on the call thread; the
    # drop is on the dropper thread in a pool of one (counted there, not here).
    assert spent["execute"] > 0 and spent["prewarm"] > 0 and spent["rebuild"] > 0
    assert all(ns >= 0 for ns in spent.values())


@pytest.mark.parametrize(
    "cpu",
    [None, "1,2,3,4,5", [1, 2, 3, 4], [1, 2, 3, 4, 5, 6], [1, 2, -3, 4, 5], [1, 2, 3, 4, 1e3],
     [True, 2, 3, 4, 5], [1, 2, 3, 4, 10**15]],
)  # fmt: skip
def test_phase_figures_a_worker_sends_are_counted_only_when_well_formed(cpu: object) -> None:
    stats = PoolStats()
    stats.add_phases(cpu)
    assert stats.phase_calls == 0 and stats.phase_cpu_ns == [0] * len(IDLE_PHASES)
    stats.add_phases([1, 2, 3, 4, 5])
    stats.add_phases([10, 20, 30, 40, 50])
    assert stats.phase_calls == 2 and stats.phase_cpu_ns == [11, 22, 33, 44, 55]
