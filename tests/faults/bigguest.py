"""Guests whose compile is slow and whose run is instant: a WASI command module and a component
of the ``skill`` world, each carrying ``funcs`` never-called functions that Cranelift must still
compile (about 0.5-2 s for 6000 on this machine), generated as WAT at test time."""

from __future__ import annotations

import wasmtime

__all__ = ["big_component", "big_module"]

_STEP = (
    "(local.set 0 (i32.add (i32.mul (local.get 0) (i32.const 31)) (local.get 1)))"
    "(local.set 1 (i32.xor (local.get 1) (local.get 0)))"
)


def _ballast(funcs: int) -> str:
    return "".join(
        f"(func $f{i} (param i32 i32) (result i32) {_STEP * 50} (local.get 0))"
        for i in range(funcs)
    )


def big_module(funcs: int = 6000, nonce: str = "") -> bytes:
    """A WASI command module whose ``_start`` writes ``{}`` to stdout (``nonce``, in a data
    segment, makes its bytes, hence its cache key, unique to a test)."""
    wat = (
        '(module (import "wasi_snapshot_preview1" "fd_write"'
        " (func $w (param i32 i32 i32 i32) (result i32)))"
        '(memory (export "memory") 1) (data (i32.const 16) "{}")'
        '(func (export "_start") (i32.store (i32.const 0) (i32.const 16))'
        " (i32.store (i32.const 4) (i32.const 2))"
        " (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))"
        f'(data (i32.const 64) "{nonce}"){_ballast(funcs)})'
    )
    return bytes(wasmtime.wat2wasm(wat))


def big_component(funcs: int = 6000, nonce: str = "") -> bytes:
    """A component exporting ``run: func(input: string) -> result<string, string>`` that
    answers ``ok("{}")`` (``nonce`` as for ``big_module``)."""
    wat = f"""(component
  (core module $m
    (memory (export "mem") 1)
    (global $bump (mut i32) (i32.const 1024))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (local $p i32)
      (local.set $p (global.get $bump))
      (global.set $bump (i32.add (global.get $bump) (local.get 3)))
      (local.get $p))
    (data (i32.const 16) "{{}}")
    (data (i32.const 64) "{nonce}")
    (func (export "run") (param i32 i32) (result i32)
      (i32.store8 (i32.const 32) (i32.const 0))
      (i32.store (i32.const 36) (i32.const 16))
      (i32.store (i32.const 40) (i32.const 2))
      (i32.const 32))
    {_ballast(funcs)})
  (core instance $i (instantiate $m))
  (func (export "run") (param "input" string) (result (result string (error string)))
    (canon lift (core func $i "run") (memory (core memory $i "mem"))
      (realloc (core func $i "realloc")))))"""
    return bytes(wasmtime.wat2wasm(wat))
