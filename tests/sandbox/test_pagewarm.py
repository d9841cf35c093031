"""Pre-faulting a slot's written pages (``pagewarm``): on a real private file mapping, the pages
a "call" wrote are learned from the page map, released as the allocator releases them, and
populated again: present and private, holding the file's bytes, never what the call wrote."""

from __future__ import annotations

import ctypes
import mmap
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.sandbox import pagewarm
from bastion.sandbox.pagewarm import MAX_PAGES, RESCAN_EVERY, PageWarmer
from bastion.sandbox.runner_build import load_runner

PAGE = mmap.PAGESIZE
PAGES = 64

pytestmark = pytest.mark.skipif(
    not pagewarm.supported(), reason="this kernel cannot populate pages with process_madvise"
)


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                       ctypes.c_long]  # fmt: skip
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_PROT_RW, _MAP_PRIVATE, _MAP_ANON, _MAP_FIXED, _MADV_DONTNEED = 3, 0x02, 0x20, 0x10, 4


class Slot:
    """A file mapped private and writable between two inaccessible guard pages, as wasmtime
    maps a memory image into a pooled slot."""

    def __init__(self, path: Path, pages: int) -> None:
        self.image = bytes((i * 7 + 3) % 251 for i in range(pages * PAGE))
        path.write_bytes(self.image)
        self.path, self.size = path, pages * PAGE
        self._reserved = _libc.mmap(None, self.size + 2 * PAGE, 0, _MAP_PRIVATE | _MAP_ANON, -1, 0)
        assert self._reserved not in (None, ctypes.c_void_p(-1).value)
        self.addr = self._reserved + PAGE
        fd = os.open(path, os.O_RDONLY)
        try:
            got = _libc.mmap(self.addr, self.size, _PROT_RW, _MAP_PRIVATE | _MAP_FIXED, fd, 0)
        finally:
            os.close(fd)
        assert got == self.addr

    def write(self, pages: set[int]) -> None:
        for p in pages:
            ctypes.memmove(self.addr + p * PAGE, b"SECRET!!", 8)

    def read(self) -> bytes:
        return ctypes.string_at(self.addr, self.size)

    def release(self) -> None:
        """What the allocator's reset does past its kept-resident bytes."""
        assert _libc.madvise(self.addr, self.size, _MADV_DONTNEED) == 0

    def unmap(self) -> None:
        _libc.mmap(self.addr, self.size, 0, _MAP_PRIVATE | _MAP_ANON | _MAP_FIXED, -1, 0)

    def touch(self, pages: set[int]) -> None:
        """Read (never write) ``pages``: each maps the file's page-cache page read-only."""
        for p in pages:
            ctypes.string_at(self.addr + p * PAGE, 1)

    def _entries(self) -> list[int]:
        fd = os.open("/proc/self/pagemap", os.O_RDONLY)
        try:
            raw = os.pread(fd, self.size // PAGE * 8, self.addr // PAGE * 8)
        finally:
            os.close(fd)
        return [int.from_bytes(raw[i : i + 8], "little") for i in range(0, len(raw), 8)]

    def private(self) -> set[int]:
        """Pages present and private now, read from the page map independently of the warmer."""
        return {i for i, e in enumerate(self._entries()) if e >> 63 & 1 and not e >> 61 & 1}

    def mapped(self) -> set[int]:
        """Pages present and still the file's (read, not written)."""
        return {i for i, e in enumerate(self._entries()) if e >> 63 & 1 and e >> 61 & 1}

    def close(self) -> None:
        _libc.munmap(self._reserved, self.size + 2 * PAGE)


@pytest.fixture
def slot(tmp_path: Path) -> Iterator[Slot]:
    s = Slot(tmp_path / "image.cwasm", PAGES)
    yield s
    s.close()


def _cycle(slot: Slot, warmer: PageWarmer, written: set[int]) -> None:
    slot.write(written)
    warmer.learn()
    slot.release()
    warmer.warm()


class TestLearnAndWarm:
    def test_the_written_pages_come_back_private_with_the_image_bytes(self, slot: Slot) -> None:
        warmer = PageWarmer(slot.path, keep_resident=0)
        written = {1, 2, 3, 17, 40, 63}
        _cycle(slot, warmer, written)
        assert warmer.populated == len(written)
        assert slot.private() == written
        assert slot.read() == slot.image  # populated with the file's bytes, not the call's
        warmer.close()

    def test_the_set_is_read_again_after_a_clean_call_every_rescan(self, slot: Slot) -> None:
        warmer = PageWarmer(slot.path, keep_resident=0)
        _cycle(slot, warmer, {1, 2})
        for _ in range(RESCAN_EVERY - 2):  # populated calls: their writes are not read
            _cycle(slot, warmer, {9})
            assert slot.private() == {1, 2}
        _cycle(slot, warmer, {9})  # the RESCAN_EVERY-th: the next call runs clean
        assert slot.private() == set()
        _cycle(slot, warmer, {5})  # read: kept with the previous reading
        assert slot.private() == {1, 2, 5}
        for _ in range(RESCAN_EVERY - 1):
            _cycle(slot, warmer, {9})
        _cycle(slot, warmer, {6})  # the previous reading ({1, 2}) is forgotten
        assert slot.private() == {5, 6}
        warmer.close()

    @settings(
        max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(st.lists(st.sets(st.integers(0, PAGES - 1), max_size=20), min_size=1, max_size=80))
    def test_no_written_byte_survives_and_nothing_unwritten_is_populated(
        self, slot: Slot, calls: list[set[int]]
    ) -> None:
        warmer = PageWarmer(slot.path, keep_resident=0)
        try:
            seen: set[int] = set()
            for written in calls:
                _cycle(slot, warmer, written)
                seen |= written
                assert slot.read() == slot.image
                assert slot.private() <= seen
        finally:
            warmer.close()
            slot.release()

    def test_pages_only_read_are_mapped_again_not_copied(self, slot: Slot) -> None:
        warmer = PageWarmer(slot.path, keep_resident=0)
        slot.touch({20, 21, 50})  # a read maps its neighbours too (fault-around)
        read = slot.mapped()
        assert {20, 21, 50} <= read
        _cycle(slot, warmer, {3})
        assert slot.private() == {3}
        assert slot.mapped() == read - {3}
        assert slot.read() == slot.image
        warmer.close()

    def test_pages_kept_resident_are_not_populated(self, slot: Slot) -> None:
        warmer = PageWarmer(slot.path, keep_resident=8 * PAGE)
        _cycle(slot, warmer, {0, 5, 7, 8, 9, 30})
        assert slot.private() == {8, 9, 30}
        warmer.close()


class TestBounds:
    def test_at_most_max_pages_are_populated(self, tmp_path: Path) -> None:
        big = Slot(tmp_path / "big.cwasm", MAX_PAGES + 100)
        try:
            warmer = PageWarmer(big.path, keep_resident=0)
            _cycle(big, warmer, set(range(MAX_PAGES + 100)))
            assert warmer.populated == MAX_PAGES
            assert big.private() == set(range(MAX_PAGES))
            warmer.close()
        finally:
            big.close()

    def test_a_slot_that_went_away_is_forgotten_without_error(self, slot: Slot) -> None:
        warmer = PageWarmer(slot.path, keep_resident=0)
        slot.write({3})
        warmer.learn()
        assert warmer.populated == 1
        slot.unmap()  # the slot's memory is gone: populating it fails
        warmer.warm()
        assert warmer.populated == 0
        warmer.close()

    def test_an_unrelated_file_is_never_touched(self, slot: Slot, tmp_path: Path) -> None:
        other = tmp_path / "other.cwasm"
        other.write_bytes(b"\0" * PAGE)
        warmer = PageWarmer(other, keep_resident=0)
        _cycle(slot, warmer, {4, 5})
        assert warmer.populated == 0
        assert slot.private() == set()
        warmer.close()


SCRIPT = textwrap.dedent(
    """
    import json, resource, statistics, sys, tempfile, time
    from pathlib import Path
    import structlog
    from bastion.executor import Capabilities, ExecutionRequest, Limits
    from bastion.sandbox import engine
    from bastion.sandbox.python_exec import PythonExecutor

    engine.configure_engine(pooling=True, prefault=sys.argv[1] == "on", keep_resident=1 << 20)
    engine.get_engine()
    folder = Path(tempfile.mkdtemp())
    src = "def run(name: str = 'w') -> dict:\\n    return {'hi': name}\\n"
    (folder / "skill.py").write_text(src)
    ex = PythonExecutor()
    ex.load()

    def request():
        return ExecutionRequest(
            skill="hello", version="1.0.0", runtime="python", entry=folder / "skill.py",
            folder=folder, input=None, input_json="{}", caps=Capabilities(), limits=Limits(),
            deadline=time.monotonic() + 30, invocation_id="t",
            logger=structlog.get_logger("t"), audit=lambda *_a: None,
        )

    faults, outs = [], []
    ex.prewarm(request())
    for i in range(12):
        req, after = request(), []
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        outs.append(ex.execute(req, after=after).decode())
        faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
        for drop in after:
            drop()
        ex.prewarm(req)
    print(json.dumps({"prefaulting": engine.prefaulting(), "faults": faults[4:], "outs": outs}))
    """
)


def _calls(mode: str) -> dict[str, object]:
    res = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                         timeout=300, check=True)  # fmt: skip
    import json

    out: dict[str, object] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


class TestPythonRunner:
    def test_prefaulting_takes_the_call_s_page_faults_ahead_of_it(self) -> None:
        load_runner()  # compiled into the cache: a worker's runner image is mapped from there
        on, off = _calls("on"), _calls("off")
        assert on["prefaulting"] is True and off["prefaulting"] is False
        assert on["outs"] == off["outs"] == ['{"hi": "w"}'] * 12
        on_faults, off_faults = on["faults"], off["faults"]
        assert isinstance(on_faults, list) and isinstance(off_faults, list)
        # released slots fault every page again; pre-faulted ones only the pages read
        assert max(on_faults) * 2 < min(off_faults), (on_faults, off_faults)


def test_doctor_and_the_worker_report_say_pre_faulting_is_on(tmp_path: Path) -> None:
    policy = tmp_path / "bastion.toml"
    policy.write_text(f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n')
    cmd = [sys.executable, "-m", "bastion.cli", "--policy", str(policy), "doctor", "--json"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    import json

    rows = {c["name"]: c for c in json.loads(res.stdout)["checks"]}
    assert rows["pre-faulting"]["detail"].startswith("on: ")
