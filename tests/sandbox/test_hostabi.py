"""The ``bastion`` host ABI: secrets, log, http, and hostile pointers (the host must survive)."""

from __future__ import annotations

import base64
import ipaddress
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.errors import ErrorCode, ExecutionError
from bastion.executor import Capabilities
from bastion.sandbox.wasi_module import WasiModuleExecutor
from tests.sandbox.conftest import AuditLog, MakeRequest
from tests.sandbox.guestbuild import GUESTS, build_wat

Guest = Callable[[str], Path]
TEMPLATE = (GUESTS / "hostile.wat.tmpl").read_text()


def _hostile(tmp: Path, call: str) -> Path:
    out = tmp / f"hostile-{abs(hash(call))}.wasm"
    out.write_bytes(build_wat(TEMPLATE.replace("{call}", call)))
    return out


def test_granted_secret_is_readable(
    executor: WasiModuleExecutor, guest: Guest, make_request: MakeRequest
) -> None:
    caps = Capabilities(secrets={"API_KEY": "s3cr3t-value-longer-than-8"})
    out = executor.execute(make_request(guest("hostcalls.c"), "secret API_KEY", caps=caps))
    assert json.loads(out) == {"secret": "s3cr3t-value-longer-than-8"}


def test_ungranted_secret_is_not(
    executor: WasiModuleExecutor,
    guest: Guest,
    make_request: MakeRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME_TOKEN", "host-env-value")
    caps = Capabilities(secrets={"API_KEY": "x"})
    out = executor.execute(make_request(guest("hostcalls.c"), "secret HOME_TOKEN", caps=caps))
    assert json.loads(out) == {"secret": None}


def test_log_reaches_the_host(
    executor: WasiModuleExecutor, guest: Guest, make_request: MakeRequest
) -> None:
    out = executor.execute(make_request(guest("hostcalls.c"), "log hello host"))
    assert json.loads(out) == {"logged": True}


def test_http_without_grant_is_denied(
    executor: WasiModuleExecutor, guest: Guest, make_request: MakeRequest
) -> None:
    req = json.dumps({"method": "GET", "url": "https://example.com/"})
    out = executor.execute(make_request(guest("hostcalls.c"), f"http {req}"))
    assert json.loads(out)["error"]["code"] == "NETWORK_DENIED"


def test_http_malformed_request(
    executor: WasiModuleExecutor, guest: Guest, make_request: MakeRequest
) -> None:
    out = executor.execute(make_request(guest("hostcalls.c"), "http {not json"))
    assert json.loads(out)["error"]["code"] == "INVALID_INPUT"


def test_denial_then_failure_reports_network_denied(
    executor: WasiModuleExecutor, tmp_path: Path, make_request: MakeRequest
) -> None:
    # http to a denied URL, then exit(1): the result says why.
    req = b'{"url": "https://example.com/"}'
    wat = f"""(module
      (import "bastion" "http" (func $http (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) {json.dumps(req.decode())})
      (func (export "_start") (drop (call $http (i32.const 0) (i32.const {len(req)})))
        (call $exit (i32.const 1))))"""
    mod = tmp_path / "deny.wasm"
    mod.write_bytes(build_wat(wat))
    with pytest.raises(ExecutionError) as info:
        executor.execute(make_request(mod))
    assert info.value.error_code is ErrorCode.NETWORK_DENIED


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        payload = json.dumps({"got": body.decode(), "path": self.path}).encode()
        self.send_response(201)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_http_through_hostnet(
    executor: WasiModuleExecutor, guest: Guest, make_request: MakeRequest, http_server: str
) -> None:
    netrule = pytest.importorskip("bastion.netrule")
    pytest.importorskip("bastion.sandbox.hostnet")
    caps = Capabilities(
        network=(netrule.NetRule.parse(http_server),),
        private_allow=(ipaddress.ip_network("127.0.0.1/32"),),
    )
    audit = AuditLog()
    req = json.dumps(
        {
            "method": "POST",
            "url": f"{http_server}/echo",
            "headers": [["content-type", "text/plain"]],
            "body_b64": base64.b64encode(b"ping").decode(),
        }
    )
    out = executor.execute(
        make_request(guest("hostcalls.c"), f"http {req}", caps=caps, audit=audit)
    )
    resp = json.loads(out)
    assert resp["status"] == 201, resp
    assert json.loads(base64.b64decode(resp["body_b64"])) == {"got": "ping", "path": "/echo"}
    assert resp["url"] == f"{http_server}/echo"


# -- hostile pointers ---------------------------------------------------------------------------

HOSTILE_CALLS = [
    "(call $log (i32.const 1) (i32.const -16) (i32.const 64))",
    "(call $log (i32.const 1) (i32.const 0) (i32.const -1))",
    "(call $log (i32.const 1) (i32.const 65530) (i32.const 7))",
    "(drop (call $secret (i32.const -1) (i32.const 5) (i32.const 0) (i32.const 8)))",
    "(drop (call $secret (i32.const 0) (i32.const 0x7fffffff) (i32.const 0) (i32.const 8)))",
    "(drop (call $http (i32.const 65000) (i32.const 4096)))",
    "(drop (call $http (i32.const 0) (i32.const -1)))",
    "(drop (call $take (i32.const -8) (i32.const 100)))",
    "(drop (call $poll (i32.const -48) (i32.const 0) (i32.const 1) (i32.const 0)))",
    "(drop (call $poll (i32.const 0) (i32.const 0) (i32.const -1) (i32.const 0)))",
]


@pytest.mark.parametrize("call", HOSTILE_CALLS)
def test_hostile_pointers_trap_the_guest_only(
    executor: WasiModuleExecutor,
    tmp_path: Path,
    make_request: MakeRequest,
    guest: Guest,
    call: str,
) -> None:
    mod = _hostile(tmp_path, call)
    try:
        executor.execute(make_request(mod))
    except ExecutionError as exc:
        assert exc.error_code in (ErrorCode.SKILL_CRASHED, ErrorCode.NETWORK_DENIED)
        if exc.error_code is ErrorCode.SKILL_CRASHED:
            assert exc.message == "invalid pointer passed to a host function"
    assert executor.execute(make_request(guest("echo.c"), "[]")) == b"[]"


def test_secret_writes_stay_inside_memory(
    executor: WasiModuleExecutor, tmp_path: Path, make_request: MakeRequest
) -> None:
    # Name fits, but the output buffer straddles the end of memory: trap, no write.
    call = "(drop (call $secret (i32.const 0) (i32.const 1) (i32.const 65534) (i32.const 64)))"
    mod = _hostile(tmp_path, f"(i32.store8 (i32.const 0) (i32.const 75)) {call}")
    caps = Capabilities(secrets={"K": "a-long-secret-value"})
    with pytest.raises(ExecutionError) as info:
        executor.execute(make_request(mod, caps=caps))
    assert info.value.error_code is ErrorCode.SKILL_CRASHED


def test_no_memory_export(
    executor: WasiModuleExecutor, tmp_path: Path, make_request: MakeRequest
) -> None:
    mod = tmp_path / "nomem.wasm"
    mod.write_bytes(
        build_wat(
            '(module (import "bastion" "log" (func $log (param i32 i32 i32))) '
            '(func (export "_start") (call $log (i32.const 0) (i32.const 0) '
            "(i32.const 4))))"
        )
    )
    with pytest.raises(ExecutionError) as info:
        executor.execute(make_request(mod))
    assert info.value.error_code is ErrorCode.SKILL_CRASHED


u32 = st.integers(min_value=0, max_value=0xFFFFFFFF)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(func=st.sampled_from(["log", "secret", "http", "take", "poll"]), a=u32, b=u32, c=u32, d=u32)
def test_random_pointers_never_hurt_the_host(
    executor: WasiModuleExecutor,
    tmp_path: Path,
    make_request: MakeRequest,
    func: str,
    a: int,
    b: int,
    c: int,
    d: int,
) -> None:
    args = {
        "log": (1, a, b),
        "secret": (a, b, c, d),
        "http": (a, b),
        "take": (a, b),
        "poll": (a, b, c & 0xFF, d),
    }[func]
    consts = " ".join(f"(i32.const {x})" for x in args)
    call = f"(call ${func} {consts})" if func == "log" else f"(drop (call ${func} {consts}))"
    mod = _hostile(tmp_path, call)
    try:
        executor.execute(make_request(mod, timeout_ms=500, caps=Capabilities(secrets={"K": "v"})))
    except ExecutionError as exc:
        assert exc.error_code in (
            ErrorCode.SKILL_CRASHED,
            ErrorCode.NETWORK_DENIED,
            ErrorCode.TIMEOUT,
        )
