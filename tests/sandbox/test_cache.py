"""The compile cache: private directory, verified entries, atomic writes, memo."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from bastion.sandbox.cache import (
    CACHE_ENV,
    CacheDirError,
    CompileCache,
    tree_digest_bytes,
    tree_digest_fd,
)
from bastion.sandbox.wasi_module import WasiModuleExecutor
from tests.sandbox.conftest import MakeRequest
from tests.sandbox.guestbuild import GUESTS, build_c

ECHO_INPUT = '{"city": "Lyon", "n": [1, 2, 3]}'


@pytest.fixture
def echo_wasm() -> bytes:
    return build_c(GUESTS / "echo.c")


def _run_echo(cache: CompileCache, entry: Path, make_request: MakeRequest) -> bytes:
    with WasiModuleExecutor(cache) as ex:
        return ex.execute(make_request(entry, ECHO_INPUT))


def test_dir_is_private(tmp_path: Path) -> None:
    cache = CompileCache(tmp_path / "c")
    assert stat.S_IMODE(cache.root.stat().st_mode) == 0o700


def test_loose_permissions_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "loose"
    root.mkdir()
    os.chmod(root, 0o777)
    with pytest.raises(CacheDirError, match="writable by others") as err:
        CompileCache(root)
    assert err.value.code == "CACHE_UNSAFE"
    os.chmod(root, 0o755)  # readable by others only: tightened, not refused
    CompileCache(root)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to create a foreign-owned directory")
def test_foreign_owner_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "foreign"
    root.mkdir(mode=0o700)
    os.chown(root, 65534, 65534)
    with pytest.raises(CacheDirError, match="owned by uid 65534"):
        CompileCache(root)


def test_env_overrides_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "envcache"))
    assert CompileCache().root == tmp_path / "envcache"


def test_second_cache_loads_from_disk(tmp_path: Path, echo_wasm: bytes) -> None:
    first = CompileCache(tmp_path)
    first.module(echo_wasm)
    assert (first.compiles, first.disk_loads) == (1, 0)
    second = CompileCache(tmp_path)
    second.module(echo_wasm)
    assert (second.compiles, second.disk_loads) == (0, 1)
    # memo: no disk touch the second time
    second.module(echo_wasm)
    assert (second.compiles, second.disk_loads) == (0, 1)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_progress_called_before_first_compile(tmp_path: Path, echo_wasm: bytes) -> None:
    seen: list[str] = []
    cache = CompileCache(tmp_path, progress=seen.append)
    cache.module(echo_wasm)
    cache.module(echo_wasm)
    assert len(seen) == 1 and seen[0].startswith("compiling module")


@pytest.mark.parametrize("damage", ["flip", "truncate", "digest", "empty", "missing_digest"])
def test_damaged_entry_is_recompiled_not_loaded(
    tmp_path: Path, echo_wasm: bytes, make_request: MakeRequest, damage: str
) -> None:
    root = tmp_path / "c"
    CompileCache(root).module(echo_wasm)
    probe = CompileCache(root)
    key = probe.key("module", echo_wasm)
    art, dig = probe.artifact_path(key), probe.digest_path(key)
    blob = bytearray(art.read_bytes())
    if damage == "flip":
        # Flip bytes in the middle of the native code section.
        mid = len(blob) // 2
        blob[mid : mid + 16] = bytes(b ^ 0xFF for b in blob[mid : mid + 16])
        art.write_bytes(blob)
    elif damage == "truncate":
        art.write_bytes(blob[: len(blob) // 3])
    elif damage == "digest":
        dig.write_text("0" * 64)
    elif damage == "empty":
        art.write_bytes(b"")
    else:
        dig.unlink()

    entry = tmp_path / "echo.wasm"
    entry.write_bytes(echo_wasm)
    cache = CompileCache(root)
    assert _run_echo(cache, entry, make_request) == ECHO_INPUT.encode()
    assert (cache.compiles, cache.disk_loads) == (1, 0)
    # The entry was replaced by a good one that verifies again.
    again = CompileCache(root)
    again.module(echo_wasm)
    assert (again.compiles, again.disk_loads) == (0, 1)


def test_file_memo_follows_mtime_and_size(tmp_path: Path, echo_wasm: bytes) -> None:
    cache = CompileCache(tmp_path / "c")
    f = tmp_path / "m.wasm"
    f.write_bytes(echo_wasm)
    m1 = cache.module_from_file(f)
    assert cache.module_from_file(f) is m1
    wat = b'(module (memory (export "memory") 1) (func (export "_start")))'
    f.write_bytes(wat)
    os.utime(f, ns=(1, 1))
    assert cache.module_from_file(f) is not m1


def test_component_roundtrip(tmp_path: Path) -> None:
    import wasmtime.component

    # The smallest valid component: the binary header only.
    comp = b"\x00asm\x0d\x00\x01\x00"
    c1 = CompileCache(tmp_path).component(comp)
    assert isinstance(c1, wasmtime.component.Component)
    c2 = CompileCache(tmp_path)
    c2.component(comp)
    assert c2.disk_loads == 1


@pytest.mark.parametrize("size", [0, 1, (4 << 20) - 1, 4 << 20, (4 << 20) + 1, (13 << 20) + 7])
def test_parallel_file_digest_equals_the_serial_one(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    f = tmp_path / "blob"
    f.write_bytes(data)
    fd = os.open(f, os.O_RDONLY)
    try:
        assert tree_digest_fd(fd) == tree_digest_bytes(data)
    finally:
        os.close(fd)
    flipped = bytearray(data or b"\0")
    flipped[len(flipped) // 2] ^= 1
    assert tree_digest_bytes(bytes(flipped)) != tree_digest_bytes(data)


@pytest.mark.parametrize("tampered", [False, True])
def test_entry_with_a_plain_sha256_record_is_verified_that_way(
    tmp_path: Path, echo_wasm: bytes, tampered: bool
) -> None:
    root = tmp_path / "c"
    first = CompileCache(root)
    first.module(echo_wasm)
    key = first.key("module", echo_wasm)
    art, dig = first.artifact_path(key), first.digest_path(key)
    dig.write_text(hashlib.sha256(art.read_bytes()).hexdigest())  # as older versions wrote it
    if tampered:
        blob = bytearray(art.read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        art.write_bytes(blob)
    again = CompileCache(root)
    again.module(echo_wasm)
    # A good entry loads and its record is rewritten as a tree digest; a tampered one is
    # recompiled (and recorded afresh), never loaded.
    assert (again.compiles, again.disk_loads) == ((1, 0) if tampered else (0, 1))
    assert dig.read_text() == tree_digest_bytes(art.read_bytes())


def test_component_by_known_digest_loads_without_reading_the_file(tmp_path: Path) -> None:
    comp = b"\x00asm\x0d\x00\x01\x00"
    f = tmp_path / "c.wasm"
    f.write_bytes(comp)
    digest = hashlib.sha256(comp).hexdigest()
    CompileCache(tmp_path / "c").component_from_file(f, sha256=digest)
    f.unlink()  # a cached entry needs only the digest
    cache = CompileCache(tmp_path / "c")
    cache.component_from_file(f, sha256=digest)
    assert (cache.compiles, cache.disk_loads) == (0, 1)


def test_a_wrong_known_digest_never_keys_fresh_code(tmp_path: Path) -> None:
    comp = b"\x00asm\x0d\x00\x01\x00"
    f = tmp_path / "c.wasm"
    f.write_bytes(comp)
    cache = CompileCache(tmp_path / "c")
    cache.component_from_file(f, sha256="ab" * 32)  # nothing cached under that digest
    assert cache.compiles == 1
    # The compiled code went under the key of what the file really hashes to.
    assert cache.artifact_path(cache.key("component", comp)).is_file()
    assert not cache.artifact_path(cache.key_for_digest("component", "ab" * 32)).exists()
