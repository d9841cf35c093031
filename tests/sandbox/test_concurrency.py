"""Many invocations at once, good and hostile, from a thread pool: isolated and correct."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bastion.errors import ErrorCode, ExecutionError
from bastion.executor import Capabilities
from bastion.sandbox.wasi_module import WasiModuleExecutor
from tests.sandbox.conftest import MakeRequest

Guest = Callable[[str], Path]

# (guest, input, limits, expected code or None for success)
MIX: list[tuple[str, str, dict[str, int], ErrorCode | None]] = [
    ("echo.c", "ECHO", {}, None),
    ("loop.wat", "{}", {"timeout_ms": 150}, ErrorCode.TIMEOUT),
    ("grow.wat", "{}", {"memory_mb": 8}, ErrorCode.MEMORY_LIMIT),
    ("recursion.wat", "{}", {}, ErrorCode.SKILL_CRASHED),
    ("flood.c", "{}", {"output_kb": 64, "timeout_ms": 20_000}, ErrorCode.OUTPUT_LIMIT),
    ("sleep.c", "{}", {"timeout_ms": 150}, ErrorCode.TIMEOUT),
    ("fail.c", "{}", {}, ErrorCode.SKILL_ERROR),
    ("hostcalls.c", "secret K", {}, None),
    ("spin.c", "3", {}, None),
    ("memhog.c", "{}", {"memory_mb": 8}, ErrorCode.MEMORY_LIMIT),
]


def test_fifty_mixed_invocations_in_parallel(
    executor: WasiModuleExecutor, guest: Guest, make_request: MakeRequest
) -> None:
    def one(i: int) -> tuple[int, ErrorCode | None, bytes]:
        name, inp, lim, _ = MIX[i % len(MIX)]
        if inp == "ECHO":
            inp = json.dumps({"i": i})
        caps = Capabilities(secrets={"K": f"value-{i}"})
        req = make_request(guest(name), inp, caps=caps, **lim)
        try:
            return i, None, executor.execute(req)
        except ExecutionError as exc:
            return i, exc.error_code, b""

    for name, *_ in MIX:
        guest(name)  # build first, outside the pool
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(50)))

    for i, code, out in results:
        name, _inp, _, expected = MIX[i % len(MIX)]
        assert code is expected, (i, name, code)
        if name == "echo.c":
            assert json.loads(out) == {"i": i}  # never another call's output
        if name == "hostcalls.c":
            assert json.loads(out) == {"secret": f"value-{i}"}  # never another call's secret
    # and afterwards a good call still works
    assert executor.execute(make_request(guest("echo.c"), '{"after": true}')) == (
        b'{"after": true}'
    )
