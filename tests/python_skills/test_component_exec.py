"""The ``component`` executor with a real component of the ``skill`` world (built from Python)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from bastion.errors import ErrorCode, ExecutionError
from bastion.executor import Capabilities, ExecutionRequest, Executor, Limits
from bastion.sandbox.component_exec import ComponentExecutor

pytestmark = pytest.mark.slow
MakeReq = Callable[..., ExecutionRequest]


def test_is_an_executor(component_executor: ComponentExecutor) -> None:
    assert isinstance(component_executor, Executor)
    assert component_executor.runtime == "component"


def test_ok_result_is_returned_as_bytes(
    component_executor: ComponentExecutor, component_request: MakeReq, echo_component: Path
) -> None:
    component_executor.prepare(echo_component)
    out = component_executor.execute(component_request({"a": [1, 2]}))
    assert json.loads(out) == {"echo": {"a": [1, 2]}}


def test_err_result_is_skill_error(
    component_executor: ComponentExecutor, component_request: MakeReq
) -> None:
    with pytest.raises(ExecutionError) as info:
        component_executor.execute(component_request({"mode": "fail", "why": "bad input"}))
    assert info.value.error_code is ErrorCode.SKILL_ERROR
    assert info.value.message == "boom: bad input"


def test_secret_through_host(
    component_executor: ComponentExecutor, component_request: MakeReq
) -> None:
    caps = Capabilities(secrets={"K": "v"})
    out = component_executor.execute(component_request({"mode": "secret", "name": "K"}, caps=caps))
    assert json.loads(out) == {"value": "v"}
    out = component_executor.execute(
        component_request({"mode": "secret", "name": "NOPE"}, caps=caps)
    )
    assert json.loads(out) == {"value": None}


def test_loop_times_out(component_executor: ComponentExecutor, component_request: MakeReq) -> None:
    with pytest.raises(ExecutionError) as info:
        component_executor.execute(
            component_request({"mode": "loop"}, limits=Limits(timeout_ms=200))
        )
    assert info.value.error_code is ErrorCode.TIMEOUT


def test_output_over_cap(component_executor: ComponentExecutor, component_request: MakeReq) -> None:
    with pytest.raises(ExecutionError) as info:
        component_executor.execute(
            component_request({"mode": "big", "n": 100_000}, limits=Limits(output_kb=16))
        )
    assert info.value.error_code is ErrorCode.OUTPUT_LIMIT


def test_memory_limit_below_component_needs(
    component_executor: ComponentExecutor, component_request: MakeReq
) -> None:
    with pytest.raises(ExecutionError) as info:
        component_executor.execute(component_request({}, limits=Limits(memory_mb=1)))
    assert info.value.error_code is ErrorCode.MEMORY_LIMIT


def test_not_a_component(component_executor: ComponentExecutor, tmp_path: Path) -> None:
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(b"\0asm\x01\0\0\0")  # a core module, not a component
    with pytest.raises(ExecutionError) as info:
        component_executor.prepare(bad)
    assert info.value.error_code is ErrorCode.SKILL_CRASHED
    assert str(tmp_path) not in info.value.message
