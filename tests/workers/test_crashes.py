"""A worker dying in one call (abort, segfault, exit, broken framing, descriptor exhaustion)
is SKILL_CRASHED for that call only: it is audited, replaced, and concurrent calls of other
skills in other workers finish untouched."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from bastion.errors import ErrorCode, ExecutionError
from bastion.executor import Capabilities, Mount
from tests.workers.conftest import ATTACK_ENTRY, Audit, MakePool, MakeRequest

HELLO = "def run(name: str = 'x') -> dict:\n    return {'hi': name}\n"
SLOW = (
    "import time\n\ndef run() -> dict:\n    t = time.monotonic()\n"
    "    while time.monotonic() - t < 1.5:\n        pass\n    return {'slow': True}\n"
)
HOARD = """
def run() -> dict:
    files = []
    try:
        while True:
            files.append(open('/data/f.txt'))
    except OSError as exc:
        return {'opened': len(files), 'error': type(exc).__name__}
"""


@pytest.mark.parametrize("how", ["abort", "segv", "kill9", "exit", "garbage"])
def test_dying_worker_is_skill_crashed_audited_and_replaced(
    how: str, make_pool: MakePool, request_for: MakeRequest
) -> None:
    pool = make_pool(attack=True)
    audit = Audit()
    with pytest.raises(ExecutionError) as info:
        pool.run(request_for(ATTACK_ENTRY, {"do": how}, runtime="attack", audit=audit))
    assert info.value.error_code is ErrorCode.SKILL_CRASHED
    assert "worker process died" in info.value.message
    crashed = [f for k, f in audit.events if k == "worker" and f["event"] == "crashed"]
    assert len(crashed) == 1
    assert pool.stats.crashed == 1
    state = pool.run(request_for(ATTACK_ENTRY, {"do": "state"}, runtime="attack"))
    assert b'"env"' in state


def test_crash_leaves_a_concurrent_call_of_another_skill_untouched(
    make_pool: MakePool, pyskill: Callable[[str, str], Path], request_for: MakeRequest
) -> None:
    pool = make_pool(count=2, attack=True)
    slow = pyskill("slow", SLOW)
    # Two ready workers, so the slow call and the crash run side by side.
    ready = [request_for(ATTACK_ENTRY, {"do": "state"}, runtime="attack") for _ in range(2)]
    threads = [threading.Thread(target=pool.run, args=(r,)) for r in ready]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(pool.run(request_for(slow, skill="slow"))))
    t.start()
    for how in ("abort", "segv"):
        with pytest.raises(ExecutionError) as info:
            pool.run(request_for(ATTACK_ENTRY, {"do": how}, runtime="attack", skill="bad"))
        assert info.value.error_code is ErrorCode.SKILL_CRASHED
    t.join()
    assert result == [b'{"slow": true}']


def test_descriptor_exhaustion_in_one_call_leaves_others_untouched(
    make_pool: MakePool, pyskill: Callable[[str, str], Path], request_for: MakeRequest,
    tmp_path: Path,
) -> None:  # fmt: skip
    data = tmp_path / "data"
    data.mkdir()
    (data / "f.txt").write_text("x")
    pool = make_pool(count=2, max_open_files=64, read_paths=(str(tmp_path),))
    hoard, slow = pyskill("hoard", HOARD), pyskill("slow", SLOW)
    caps = Capabilities(mounts=(Mount("/data", data, False),))
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(pool.run(request_for(slow, skill="slow"))))
    t.start()
    out = pool.run(request_for(hoard, caps=caps, skill="hoard"))
    t.join()
    assert b'"error": "OSError"' in out
    opened = int(out.split(b'"opened": ')[1].split(b",")[0])
    assert 0 < opened < 64
    assert result == [b'{"slow": true}']
    # The hoarding worker closed its files with the store: it serves the next call.
    assert b'"opened"' in pool.run(request_for(hoard, caps=caps, skill="hoard"))


class _RaisingLogger:
    def __getattr__(self, name: str) -> Callable[..., None]:
        def log(*_a: object, **_k: object) -> None:
            raise RuntimeError("the log sink is broken")

        return log


def test_kernel_side_failure_mid_call_ends_that_worker_not_the_pool(
    make_pool: MakePool, pyskill: Callable[[str, str], Path], request_for: MakeRequest
) -> None:
    pool = make_pool(count=1)
    noisy = pyskill("noisy", "def run() -> dict:\n    print('hi')\n    return {}\n")
    hello = pyskill("hello", HELLO)
    req = request_for(noisy)
    req = dataclasses.replace(req, logger=_RaisingLogger())
    with pytest.raises(RuntimeError, match="log sink"):
        pool.run(req)
    # The worker left mid-call was ended and replaced: the single slot serves the next call.
    assert pool.run(request_for(hello)) == b'{"hi": "x"}'


def test_what_a_dying_worker_wrote_to_stderr_goes_to_the_detail_only(
    make_pool: MakePool, request_for: MakeRequest
) -> None:
    pool = make_pool(attack=True)
    audit = Audit()
    with pytest.raises(ExecutionError) as info:
        pool.run(request_for(ATTACK_ENTRY, {"do": "panic"}, runtime="attack", audit=audit))
    assert info.value.error_code is ErrorCode.SKILL_CRASHED
    assert "panicked" not in info.value.message
    assert info.value.detail is not None and "panicked at a test-only spot" in info.value.detail
    crashed = [f for k, f in audit.events if k == "worker" and f["event"] == "crashed"]
    assert "SIGABRT" in crashed[0]["how"] and "panicked" in crashed[0]["how"]
