"""Workers reuse pooled, keep-resident memory slots: a fresh instance must still start with
zeroed memory. One module writes a marker all over its memory; the next call's module, in the
same worker (the same slot), looks for it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bastion.sandbox import pagewarm
from tests.sandbox.guestbuild import build_wat
from tests.workers.conftest import MakePool, MakeRequest

PRINT = """
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 4)
  (data (i32.const 16) "{\\"dirty\\":false}{\\"dirty\\":true} ")
  (func $print (param $dirty i32)
    (i32.store (i32.const 0) (select (i32.const 31) (i32.const 16) (local.get $dirty)))
    (i32.store (i32.const 4) (select (i32.const 14) (i32.const 15) (local.get $dirty)))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
"""
WRITER = (
    "(module"
    + PRINT
    + """
  (func (export "_start") (local $p i32)
    (local.set $p (i32.const 1024))
    (block $done (loop $l
      (i32.store (local.get $p) (i32.const 0x5ec2e75))
      (local.set $p (i32.add (local.get $p) (i32.const 4)))
      (br_if $done (i32.ge_u (local.get $p) (i32.const 262140)))
      (br $l)))
    (call $print (i32.const 0))))
"""
)
READER = (
    "(module"
    + PRINT
    + """
  (func (export "_start") (local $p i32) (local $dirty i32)
    (local.set $p (i32.const 1024))
    (block $done (loop $l
      (if (i32.ne (i32.load (local.get $p)) (i32.const 0)) (then (local.set $dirty (i32.const 1))))
      (local.set $p (i32.add (local.get $p) (i32.const 4)))
      (br_if $done (i32.ge_u (local.get $p) (i32.const 262140)))
      (br $l)))
    (call $print (local.get $dirty))))
"""
)


def _sized(wat: str, pages: int) -> str:
    """The same module with ``pages`` of memory, all of it (past the first KiB) written/read."""
    end = pages * 65536 - 4
    return wat.replace(
        '(memory (export "memory") 4)', f'(memory (export "memory") {pages})'
    ).replace("(i32.const 262140)", f"(i32.const {end})")


@pytest.mark.parametrize("pages", [4, 48], ids=["within-kept-resident", "past-kept-resident"])
def test_a_reused_slot_starts_zeroed(
    make_pool: MakePool, wasm_prepared: Callable[[Path], Path], skills_dir: Path,
    request_for: MakeRequest, pages: int,
) -> None:  # fmt: skip
    # 4 pages (256 KiB) lie inside the 1 MiB a pre-faulting worker keeps resident (reset in
    # place); 48 (3 MiB) go past it, into memory the slot releases and faults in again.
    writer, reader = skills_dir / f"writer{pages}.wasm", skills_dir / f"reader{pages}.wasm"
    writer.write_bytes(build_wat(_sized(WRITER, pages)))
    reader.write_bytes(build_wat(_sized(READER, pages)))
    wasm_prepared(writer)
    wasm_prepared(reader)
    pool = make_pool(count=1)
    for _ in range(5):
        assert pool.run(request_for(writer, runtime="wasm")) == b'{"dirty":false}'
        assert pool.run(request_for(reader, runtime="wasm")) == b'{"dirty":false}'
    report = pool.reports()[0]
    assert report["pooling"] is True
    assert report["prefault"] is pagewarm.supported()
