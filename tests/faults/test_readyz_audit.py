"""``/readyz`` tells the truth about the audit log: a running ``bastion serve`` whose audit file
system fills up answers 503 with ``audit: false`` (a load balancer stops sending it calls it
would refuse with ``AUDIT_UNAVAILABLE``), and 200 again once space is freed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import wasmtime

from tests.faults.diskfill import fill
from tests.serve.conftest import run_serve, server_env, wait_for


def _pack(root: Path) -> Path:
    pack = root / "pack"
    (pack / "noop").mkdir(parents=True)
    (pack / "noop" / "skill.wasm").write_bytes(
        bytes(wasmtime.wat2wasm('(module (memory (export "memory") 1) (func (export "_start")))'))
    )
    (pack / "noop" / "skill.toml").write_text(
        'name = "noop"\nversion = "1.0.0"\ndescription = "Nothing."\n'
        'runtime = "wasm"\nentry = "skill.wasm"\ninput_schema = { type = "object" }\n'
    )
    (pack / "bastion-pack.toml").write_text('name = "noop"\nversion = "1.0.0"\nskills = ["noop"]\n')
    return pack


def test_readyz_is_503_while_the_audit_disk_is_full(small_fs: Path, tmp_path: Path) -> None:
    policy = tmp_path / "bastion.toml"
    policy.write_text(f'[audit]\npath = "{small_fs / "audit.jsonl"}"\n')
    with run_serve(policy, _pack(tmp_path), env=server_env()) as s:

        def ready() -> tuple[int, Any]:
            r = httpx.get(s.base + "/readyz", timeout=30)
            return r.status_code, r.json()

        assert ready()[0] == 200
        filler = fill(small_fs)
        status, body = wait_for(lambda: (r := ready())[0] == 503 and r, 60, 0.1)
        assert status == 503 and body["checks"]["audit"] is False, body
        filler.unlink()
        wait_for(lambda: ready()[0] == 200, 60, 0.1)
