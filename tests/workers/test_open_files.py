"""The per-call count of open guest files: a call that fails because its guest filled the
worker's descriptor table gets an error naming the count, the limit and the policy key (not
the guest's unclear "I/O error", which is what wasmtime hands it for EMFILE); a concurrent call
of another skill, in another worker, is untouched; the hoarding worker serves the next call."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from bastion.errors import ErrorCode, ExecutionError
from bastion.executor import Capabilities, Mount
from tests.sandbox.guestbuild import build_c
from tests.workers.conftest import MakePool, MakeRequest

HERE = Path(__file__).resolve().parent
LIMIT = 64
HOARD_PY = """
def run() -> dict:
    files = []
    while True:
        files.append(open('/data/f.txt'))
"""
CATCHES = """
def run() -> dict:
    files = []
    try:
        while True:
            files.append(open('/data/f.txt'))
    except OSError:
        n = len(files)
        for f in files:
            f.close()
        return {'opened': n}
"""
SLOW = "import time\n\ndef run() -> dict:\n    time.sleep(1.0)\n    return {'slow': True}\n"
HELLO = "def run(name: str = 'x') -> dict:\n    return {'hi': name}\n"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    (d / "f.txt").write_text("x")
    return d


def _caps(data: Path) -> Capabilities:
    return Capabilities(mounts=(Mount("/data", data, False),))


def _assert_clear(err: ExecutionError, budget: int) -> None:
    assert err.error_code is ErrorCode.SKILL_ERROR
    assert f"a call may hold {budget}" in err.message
    assert f"[workers] max_open_files = {LIMIT}" in err.message
    assert "raise [workers] max_open_files" in err.message
    assert "I/O error" not in err.message  # the guest's own wording goes to the detail only


class TestPythonSkill:
    def test_opening_files_in_a_loop_gets_the_clear_error(
        self, make_pool: MakePool, pyskill: Callable[[str, str], Path], request_for: MakeRequest,
        data: Path, tmp_path: Path,
    ) -> None:  # fmt: skip
        pool = make_pool(max_open_files=LIMIT, read_paths=(str(tmp_path),))
        hoard, hello = pyskill("hoard", HOARD_PY), pyskill("hello", HELLO)
        with pytest.raises(ExecutionError) as info:
            pool.run(request_for(hoard, caps=_caps(data), skill="hoard"))
        budget = pool.reports()[0]["limits"]["guest_files"]
        assert 0 < budget < LIMIT
        _assert_clear(info.value, budget)
        assert "I/O error" in (info.value.detail or "")
        before = pool.pids()
        assert pool.run(request_for(hello)) == b'{"hi": "x"}'  # the same worker, files closed
        assert pool.pids() == before

    def test_a_skill_that_handles_the_refusal_keeps_its_own_result(
        self, make_pool: MakePool, pyskill: Callable[[str, str], Path], request_for: MakeRequest,
        data: Path, tmp_path: Path,
    ) -> None:  # fmt: skip
        pool = make_pool(max_open_files=LIMIT, read_paths=(str(tmp_path),))
        out = pool.run(request_for(pyskill("catches", CATCHES), caps=_caps(data)))
        opened = int(out.split(b'"opened": ')[1].rstrip(b"}"))
        assert 0 < opened <= pool.reports()[0]["limits"]["guest_files"]

    def test_a_concurrent_call_of_another_skill_is_untouched(
        self, make_pool: MakePool, pyskill: Callable[[str, str], Path], request_for: MakeRequest,
        data: Path, tmp_path: Path,
    ) -> None:  # fmt: skip
        pool = make_pool(count=2, max_open_files=LIMIT, read_paths=(str(tmp_path),))
        hoard, slow = pyskill("hoard", HOARD_PY), pyskill("slow", SLOW)
        result: list[object] = []
        t = threading.Thread(target=lambda: result.append(pool.run(request_for(slow))))
        t.start()
        with pytest.raises(ExecutionError) as info:
            pool.run(request_for(hoard, caps=_caps(data), skill="hoard"))
        t.join()
        assert info.value.error_code is ErrorCode.SKILL_ERROR
        assert "too many files open" in info.value.message
        assert result == [b'{"slow": true}']


class TestWasiModule:
    def test_opening_files_in_a_loop_gets_the_clear_error(
        self, make_pool: MakePool, wasm_prepared: Callable[[Path], Path], skills_dir: Path,
        request_for: MakeRequest, data: Path, tmp_path: Path,
    ) -> None:  # fmt: skip
        module = skills_dir / "hoard.wasm"
        module.write_bytes(build_c(HERE / "guests" / "hoard.c"))
        wasm_prepared(module)
        pool = make_pool(max_open_files=LIMIT, read_paths=(str(tmp_path),))
        with pytest.raises(ExecutionError) as info:
            pool.run(request_for(module, runtime="wasm", caps=_caps(data), skill="hoardc"))
        _assert_clear(info.value, pool.reports()[0]["limits"]["guest_files"])
        assert "fopen failed" in (info.value.detail or "")
        before = pool.pids()
        with pytest.raises(ExecutionError) as again:  # its files were closed with its store
            pool.run(request_for(module, runtime="wasm", caps=_caps(data), skill="hoardc"))
        _assert_clear(again.value, pool.reports()[0]["limits"]["guest_files"])
        assert pool.pids() == before
        assert pool.stats.crashed == 0
