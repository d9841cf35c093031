"""The compile cache's two roles under faults: a load-only cache (a worker's) never compiles or
writes and reports a typed miss; ``restore`` (the kernel's repair) puts a verified entry back on
disk whatever the memory holds, and refuses a folder it cannot trust."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import wasmtime

from bastion.cachedir import CacheDirError
from bastion.sandbox.cache import CacheMissError, CompileCache

WAT = '(module (memory (export "memory") 1) (func (export "_start")) (data (i32.const 0) "r"))'


@pytest.fixture
def module_file(tmp_path: Path) -> Path:
    path = tmp_path / "m.wasm"
    path.write_bytes(bytes(wasmtime.wat2wasm(WAT)))
    return path


def test_a_load_only_cache_reports_a_miss_and_writes_nothing(
    tmp_path: Path, module_file: Path
) -> None:
    root = tmp_path / "c"
    root.mkdir(mode=0o700)
    cache = CompileCache(root, load_only=True)
    with pytest.raises(CacheMissError) as info:
        cache.module_from_file(module_file)
    assert info.value.code == "INTERNAL" and "no verified entry" in info.value.reason
    assert list(root.iterdir()) == [] and cache.compiles == 0


def test_a_load_only_cache_loads_what_the_kernel_compiled(
    tmp_path: Path, module_file: Path
) -> None:
    root = tmp_path / "c"
    CompileCache(root).module_from_file(module_file)
    worker = CompileCache(root, load_only=True)
    assert isinstance(worker.module_from_file(module_file), wasmtime.Module)
    assert worker.disk_loads == 1 and worker.compiles == 0


@pytest.mark.parametrize("fault", ["loose", "gone"])
def test_a_load_only_cache_refuses_an_unsafe_or_missing_folder_as_a_miss(
    tmp_path: Path, module_file: Path, fault: str
) -> None:
    root = tmp_path / "c"
    CompileCache(root).module_from_file(module_file)
    if fault == "loose":
        os.chmod(root, 0o777)
    else:
        for p in root.iterdir():
            p.unlink()
        root.rmdir()
    with pytest.raises(CacheMissError) as info:
        CompileCache(root, load_only=True).module_from_file(module_file)
    assert str(root) in info.value.reason
    assert root.exists() is (fault == "loose")  # never created or fixed by a worker


def test_restore_reserializes_what_this_process_compiled(tmp_path: Path, module_file: Path) -> None:
    root = tmp_path / "c"
    cache = CompileCache(root)
    cache.module_from_file(module_file)
    key = cache.key("module", module_file.read_bytes())
    cache.artifact_path(key).write_bytes(b"garbage")  # the disk entry damaged, memory intact
    assert cache.restore("module", module_file) is True
    assert cache.compiles == 1  # re-serialized from memory, not compiled again
    assert cache.restore("module", module_file) is False  # verified: nothing to do
    assert CompileCache(root, load_only=True).module_from_file(module_file) is not None


def test_restore_compiles_rather_than_reuse_a_mapped_object(
    tmp_path: Path, module_file: Path
) -> None:
    root = tmp_path / "c"
    CompileCache(root).module_from_file(module_file)
    cache = CompileCache(root)
    cache.module_from_file(module_file)  # loaded (mapped) from the disk entry
    assert cache.disk_loads == 1
    key = cache.key("module", module_file.read_bytes())
    cache.artifact_path(key).unlink()
    assert cache.restore("module", module_file) is True
    assert cache.compiles == 1  # the mapped file may be the damaged one: compiled afresh


def test_restore_recreates_a_deleted_folder_private(tmp_path: Path, module_file: Path) -> None:
    root = tmp_path / "c"
    cache = CompileCache(root)
    cache.module_from_file(module_file)
    for p in root.iterdir():
        p.unlink()
    root.rmdir()
    assert cache.restore("module", module_file) is True
    assert os.stat(root).st_mode & 0o777 == 0o700


@pytest.mark.parametrize("fault", ["file", "loose"])
def test_restore_refuses_a_folder_it_cannot_trust(
    tmp_path: Path, module_file: Path, fault: str
) -> None:
    root = tmp_path / "c"
    cache = CompileCache(root)
    cache.module_from_file(module_file)
    if fault == "file":
        for p in root.iterdir():
            p.unlink()
        root.rmdir()
        root.write_text("the operator's file\n")
    else:
        os.chmod(root, 0o777)
    with pytest.raises(CacheDirError) as info:
        cache.restore("module", module_file)
    assert info.value.code == "CACHE_UNSAFE" and str(root) in str(info.value)
    if fault == "file":
        assert root.read_text() == "the operator's file\n"  # never deleted
