"""The whole pipeline with real WASI skills: pack -> grant -> sandbox -> sanitize -> audit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bastion import Kernel, load_policy
from bastion.audit import read_audit
from tests.sandbox.guestbuild import GUESTS, build_c, build_wat

OBJ = 'input_schema = { type = "object" }'


def skill(folder: Path, name: str, wasm: bytes, extra: str = "") -> None:
    d = folder / name
    d.mkdir()
    (d / "skill.wasm").write_bytes(wasm)
    (d / "skill.toml").write_text(
        f'name = "{name}"\nversion = "1.0.0"\ndescription = "{name}"\nruntime = "wasm"\n'
        f'entry = "skill.wasm"\n{extra}\n'
    )


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wasm-pack")
    echo = build_c(GUESTS / "echo.c")
    skill(folder, "echo", echo, OBJ + '\noutput_schema = { type = "object", required = ["v"] }')
    skill(folder, "raw_echo", echo, 'input_schema = { type = "object" }')
    skill(folder, "spin", build_wat(GUESTS / "loop.wat"), OBJ + "\n[limits]\ntimeout_ms = 200")
    skill(folder, "flood", build_c(GUESTS / "flood.c"), OBJ + "\n[limits]\noutput_kb = 8")
    skill(
        folder,
        "probe",
        build_c(GUESTS / "fsprobe.c"),
        'input_schema = { type = "object" }\n[[permissions.filesystem]]\npath = "/data"\n'
        'access = "read"',
    )
    (folder / "bastion-pack.toml").write_text(
        'name = "wasm-test"\nversion = "1.0.0"\n'
        'skills = ["echo", "raw_echo", "spin", "flood", "probe"]\n'
    )
    return folder


@pytest.fixture
def kernel(pack: Path, tmp_path: Path) -> Any:
    data = tmp_path / "data"
    data.mkdir()
    (data / "hello.txt").write_text("hi")
    pol = load_policy(
        text=f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n'
        f'[[mounts]]\nguest = "/data"\nhost = "{data}"\n'
    )
    k = Kernel(pol, pack_paths=[pack], entry_points=False)
    yield k
    k.close()


def test_echo_round_trip(kernel: Kernel) -> None:
    r = kernel.invoke("echo", {"v": [1, "two", {"three": 3.5}]})
    assert r.ok, r.error
    assert r.output == {"v": [1, "two", {"three": 3.5}]}


def test_output_schema_and_sanitizing_apply_to_wasm_output(kernel: Kernel) -> None:
    r = kernel.invoke("echo", {"w": 1})
    assert r.error is not None and r.error.code == "INVALID_OUTPUT"
    r = kernel.invoke("raw_echo", {"v": "\x1b[2Jcleared\u202eevil"})
    assert r.ok and r.output == {"v": "clearedevil"}


@pytest.mark.parametrize(("name", "code"), [("spin", "TIMEOUT"), ("flood", "OUTPUT_LIMIT")])
def test_limits_through_the_kernel(kernel: Kernel, name: str, code: str) -> None:
    r = kernel.invoke(name, {})
    assert r.error is not None and r.error.code == code


def test_every_call_is_audited(kernel: Kernel, tmp_path: Path) -> None:
    kernel.invoke("echo", {"v": 1})
    kernel.invoke("spin", {})
    kernel.audit.flush()
    recs = [r for r in read_audit(tmp_path / "audit.jsonl") if r["event"] == "invoke"]
    assert [(r["skill"], r["outcome"], r["runtime"]) for r in recs] == [
        ("echo", "ok", "wasm"),
        ("spin", "TIMEOUT", "wasm"),
    ]
    assert all(json.dumps(r) for r in recs)


def test_each_skill_runs_its_own_entry_when_calls_interleave(kernel: Kernel) -> None:
    """Entry paths are resolved once per skill at start-up: interleaved calls of different
    skills each reach their own module and folder."""
    for _ in range(2):
        r = kernel.invoke("probe", {})  # fsprobe exits 3 on input shorter than a command
        assert r.error is not None and r.error.code == "SKILL_ERROR"
        assert "status 3" in r.error.message
        assert kernel.invoke("raw_echo", {"n": 1}).output == {"n": 1}
        assert kernel.invoke("spin", {}).error.code == "TIMEOUT"  # type: ignore[union-attr]
        assert kernel.invoke("echo", {"v": 2}).output == {"v": 2}
