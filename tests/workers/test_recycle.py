"""``WorkerPool.recycle()`` and the cache repair it serves: idle workers are replaced at once,
a busy one after its call (which finishes untouched); a WASI module or component whose compiled
entry vanished under running workers is put back on disk by the kernel and the call succeeds
in a new worker (the Python runner's repair is in tests/faults/test_cache_faults.py)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from bastion import Kernel, load_policy
from bastion.sandbox.cache import default_cache
from tests.faults.bigguest import big_component, big_module
from tests.workers.conftest import MakePool, MakeRequest

HELLO = "def run(name: str = 'x') -> dict:\n    return {'hi': name}\n"
SLOW = (
    "import time\n\ndef run() -> dict:\n    t = time.monotonic()\n"
    "    while time.monotonic() - t < 1.0:\n        pass\n    return {'slow': True}\n"
)


def _wait_for(check: Callable[[], bool], seconds: float = 60.0) -> None:
    end = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.02)


def test_recycle_replaces_idle_workers(
    make_pool: MakePool, pyskill: Callable[[str, str], Path], request_for: MakeRequest
) -> None:
    pool = make_pool(count=1)
    hello = pyskill("hello", HELLO)
    assert pool.run(request_for(hello, {"name": "a"})) == b'{"hi": "a"}'
    (old,) = pool.pids()
    assert pool.recycle() == 1
    assert pool.run(request_for(hello, {"name": "b"})) == b'{"hi": "b"}'
    assert old not in pool.pids() and len(pool.pids()) == 1
    assert pool.stats.recycled == 1


def test_a_busy_worker_finishes_its_call_then_is_replaced(
    make_pool: MakePool, pyskill: Callable[[str, str], Path], request_for: MakeRequest
) -> None:
    pool = make_pool(count=1)
    slow, hello = pyskill("slow", SLOW), pyskill("hello", HELLO)
    assert pool.run(request_for(hello)) == b'{"hi": "x"}'
    (old,) = pool.pids()
    out: list[bytes] = []
    t = threading.Thread(target=lambda: out.append(pool.run(request_for(slow))))
    t.start()
    _wait_for(lambda: pool.stats.calls == 2)
    assert pool.recycle() == 1  # busy: marked, not killed
    t.join()
    assert out == [b'{"slow": true}']
    assert pool.run(request_for(hello)) == b'{"hi": "x"}'
    assert old not in pool.pids()


@pytest.mark.parametrize("runtime", ["wasm", "component"])
def test_a_vanished_compiled_entry_is_repaired_for_running_workers(
    tmp_path: Path, runtime: str
) -> None:
    nonce = uuid.uuid4().hex  # its own cache key: the shared test cache is not disturbed
    data = big_module(1, nonce) if runtime == "wasm" else big_component(1, nonce)
    pack = tmp_path / "pack"
    (pack / "probe").mkdir(parents=True)
    (pack / "probe" / "m.wasm").write_bytes(data)
    (pack / "probe" / "skill.toml").write_text(
        'name = "probe"\nversion = "0.1.0"\ndescription = "Probe."\n'
        f'runtime = "{runtime}"\nentry = "m.wasm"\ninput_schema = {{ type = "object" }}\n'
    )
    (pack / "bastion-pack.toml").write_text('name = "p"\nversion = "0.1.0"\nskills = ["probe"]\n')
    text = f'[audit]\npath = "{tmp_path / "a.jsonl"}"\n[workers]\ncount = 1\n'
    kind = "module" if runtime == "wasm" else "component"
    cache = default_cache()
    key = cache.key(kind, data)
    with Kernel(load_policy(text=text), pack_paths=[pack], entry_points=False) as k:
        assert k.invoke("probe", {}).output == {}
        assert cache.artifact_path(key).is_file()
        for p in (cache.artifact_path(key), cache.digest_path(key)):
            p.unlink()  # from the disk only: the kernel's memory still holds the module
        k.workers.recycle()  # as after a timeout or a crash: a new worker, the entry gone
        res = k.invoke("probe", {})
        assert res.ok and res.output == {}, res
        assert cache.artifact_path(key).is_file()  # re-serialized onto the disk
        assert k.workers.stats.recycled >= 2  # the explicit one, then the repair's
    records = (tmp_path / "a.jsonl").read_text()
    assert '"cache_repaired"' in records


def test_a_miss_crosses_the_wire_typed_and_other_errors_stay_plain() -> None:
    from bastion.errors import ErrorCode, ExecutionError
    from bastion.sandbox.cache import CacheMissError
    from bastion.sandbox.workers.wire import decode_error, encode_error

    back = decode_error(encode_error(7, CacheMissError("component", "ab" * 32, "gone")))
    assert isinstance(back, CacheMissError)
    assert (back.kind, back.key, back.reason) == ("component", "ab" * 32, "gone")
    plain = decode_error(encode_error(7, ExecutionError(ErrorCode.SKILL_ERROR, "boom")))
    assert not isinstance(plain, CacheMissError) and plain.error_code is ErrorCode.SKILL_ERROR
