"""The ``wasm`` executor: results, exit codes, limits and traps mapped to error codes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from bastion.errors import ErrorCode, ExecutionError
from bastion.executor import Executor
from bastion.sandbox.wasi_module import WasiModuleExecutor
from tests.sandbox.conftest import MakeRequest

Guest = Callable[[str], Path]


def _fail(ex: WasiModuleExecutor, req: object) -> ExecutionError:
    with pytest.raises(ExecutionError) as info:
        ex.execute(req)  # type: ignore[arg-type]
    return info.value


def test_implements_the_executor_protocol(executor: WasiModuleExecutor) -> None:
    assert isinstance(executor, Executor)
    assert executor.runtime == "wasm"


def test_echo_returns_stdout(
    executor: WasiModuleExecutor, guest: Guest, make_request: MakeRequest
) -> None:
    data = json.dumps({"q": "héllo", "n": list(range(100))})
    out = executor.execute(make_request(guest("echo.c"), data))
    assert json.loads(out) == json.loads(data)


def test_prepare_then_execute(
    executor: WasiModuleExecutor, guest: Guest, make_request: MakeRequest
) -> None:
    executor.prepare(guest("echo.c"))
    assert executor.execute(make_request(guest("echo.c"), "[1]")) == b"[1]"


def test_nonzero_exit_is_skill_error_with_scrubbed_stderr(
    executor: WasiModuleExecutor, guest: Guest, make_request: MakeRequest
) -> None:
    err = _fail(executor, make_request(guest("fail.c")))
    assert err.error_code is ErrorCode.SKILL_ERROR
    assert "status 3" in err.message
    assert "bad input: missing field 'city'" in err.message
    assert "\x1b" not in err.message


def test_infinite_loop_times_out(
    executor: WasiModuleExecutor, guest: Guest, make_request: MakeRequest
) -> None:
    err = _fail(executor, make_request(guest("loop.wat"), timeout_ms=100))
    assert err.error_code is ErrorCode.TIMEOUT
    assert "100 ms" in err.message and err.retryable


def test_deadline_already_passed(
    executor: WasiModuleExecutor, guest: Guest, make_request: MakeRequest
) -> None:
    req = make_request(guest("echo.c"))
    object.__setattr__(req, "deadline", req.deadline - 60)
    assert _fail(executor, req).error_code is ErrorCode.TIMEOUT


def test_short_sleep_is_allowed(
    executor: WasiModuleExecutor, guest: Guest, make_request: MakeRequest
) -> None:
    out = executor.execute(make_request(guest("nap.c"), timeout_ms=2000))
    assert json.loads(out) == {"slept": True}


@pytest.mark.parametrize("name", ["grow.wat", "grow_oob.wat", "memhog.c"])
def test_memory_growth_past_cap(
    executor: WasiModuleExecutor, guest: Guest, make_request: MakeRequest, name: str
) -> None:
    err = _fail(executor, make_request(guest(name), memory_mb=8))
    assert err.error_code is ErrorCode.MEMORY_LIMIT
    assert "8 MiB" in err.message
    # the host is fine and the next call works
    assert executor.execute(make_request(guest("echo.c"), "{}")) == b"{}"


def test_initial_memory_over_cap(
    executor: WasiModuleExecutor, guest: Guest, make_request: MakeRequest
) -> None:
    err = _fail(executor, make_request(guest("bigmem.wat"), memory_mb=16))
    assert err.error_code is ErrorCode.MEMORY_LIMIT


@pytest.mark.parametrize("name", ["recursion.wat", "recurse.c"])
def test_deep_recursion_crashes_guest_not_host(
    executor: WasiModuleExecutor, guest: Guest, make_request: MakeRequest, name: str
) -> None:
    err = _fail(executor, make_request(guest(name)))
    assert err.error_code is ErrorCode.SKILL_CRASHED
    if name.endswith(".wat"):
        assert err.message == "stack overflow"
    assert executor.execute(make_request(guest("echo.c"), "{}")) == b"{}"


def test_other_traps_are_skill_crashed(
    executor: WasiModuleExecutor, wat_file: Callable[[str], Path], make_request: MakeRequest
) -> None:
    div = wat_file(
        '(module (memory (export "memory") 1) (func (export "_start") '
        "(drop (i32.div_u (i32.const 1) (i32.const 0)))))"
    )
    err = _fail(executor, make_request(div))
    assert (err.error_code, err.message) == (ErrorCode.SKILL_CRASHED, "integer division by zero")


def test_output_over_cap(
    executor: WasiModuleExecutor, guest: Guest, make_request: MakeRequest
) -> None:
    big = json.dumps({"s": "x" * 5000})
    err = _fail(executor, make_request(guest("echo.c"), big, output_kb=4))
    assert err.error_code is ErrorCode.OUTPUT_LIMIT
    assert "4 KiB" in err.message


def test_missing_entry_and_invalid_module(
    executor: WasiModuleExecutor, tmp_path: Path, make_request: MakeRequest
) -> None:
    err = _fail(executor, make_request(tmp_path / "nope.wasm"))
    assert err.error_code is ErrorCode.NOT_FOUND and str(tmp_path) not in err.message
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(b"\x00asm garbage")
    err = _fail(executor, make_request(bad))
    assert err.error_code is ErrorCode.SKILL_CRASHED and str(tmp_path) not in err.message


def test_unknown_import_is_refused(
    executor: WasiModuleExecutor, wat_file: Callable[[str], Path], make_request: MakeRequest
) -> None:
    mod = wat_file(
        '(module (import "env" "system" (func)) (memory (export "memory") 1) '
        '(func (export "_start")))'
    )
    err = _fail(executor, make_request(mod))
    assert err.error_code is ErrorCode.SKILL_CRASHED
    assert "env" in err.message and "system" in err.message


def test_not_a_command(
    executor: WasiModuleExecutor, wat_file: Callable[[str], Path], make_request: MakeRequest
) -> None:
    mod = wat_file('(module (memory (export "memory") 1) (func (export "main")))')
    err = _fail(executor, make_request(mod))
    assert err.error_code is ErrorCode.SKILL_CRASHED and "_start" in err.message


def test_every_run_leaves_the_store_registries_empty(
    executor: WasiModuleExecutor, guest: Guest, tmp_path: Path, make_request: MakeRequest
) -> None:
    """Sinks and states are unregistered by ``Sandbox.close`` (no finalizer runs for them):
    after a success, a guest failure, an output cap and a set-up refused before the store
    exists (a missing mount), nothing is left behind."""
    from bastion.executor import Capabilities, Mount
    from bastion.sandbox import store

    sinks, states = dict(store._SINKS), dict(store._STATES)
    assert executor.execute(make_request(guest("echo.c"), "[1]")) == b"[1]"
    _fail(executor, make_request(guest("fail.c")))
    _fail(executor, make_request(guest("echo.c"), json.dumps({"s": "x" * 5000}), output_kb=4))
    gone = Mount(guest="/data", host=tmp_path / "missing")
    err = _fail(executor, make_request(guest("echo.c"), caps=Capabilities(mounts=(gone,))))
    assert err.error_code is ErrorCode.FS_DENIED
    assert sinks == store._SINKS and states == store._STATES


def test_argv_is_the_skill_name_for_each_skill(
    executor: WasiModuleExecutor, guest: Guest, make_request: MakeRequest
) -> None:
    """The per-name argv memo gives each skill its own name, also after the memo is reset."""
    from bastion.sandbox import store

    for name in ("alpha", "beta", "alpha", "héllo-ünïcode"):
        out = executor.execute(make_request(guest("envargs.c"), skill=name))
        assert json.loads(out) == {"argc": 1, "argv0": name, "envc": 0, "home": False}
    store._argv_memo.clear()
    out = executor.execute(make_request(guest("envargs.c"), skill="beta"))
    assert json.loads(out)["argv0"] == "beta"
