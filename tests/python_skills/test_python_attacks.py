"""Attacks from a Python skill: every limit and every escape route must fail cleanly."""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bastion.errors import ErrorCode, ExecutionError
from bastion.executor import Capabilities, Limits, Mount
from bastion.sandbox.python_exec import PythonExecutor
from tests.python_skills.conftest import AuditLog, MakeSkill

pytestmark = pytest.mark.slow


def _run(ex: PythonExecutor, req: object) -> object:
    return json.loads(ex.execute(req))  # type: ignore[arg-type]


def _fail(ex: PythonExecutor, req: object) -> ExecutionError:
    with pytest.raises(ExecutionError) as info:
        ex.execute(req)  # type: ignore[arg-type]
    return info.value


# -- host files, environment ---------------------------------------------------------------------


def test_host_files_are_invisible(python_executor: PythonExecutor, skill: MakeSkill) -> None:
    src = (
        "import os\n"
        "def run():\n"
        "    out = {}\n"
        "    for what, fn in (('passwd', lambda: open('/etc/passwd').read()),\n"
        "                     ('root', lambda: os.listdir('/')),\n"
        "                     ('cwd', lambda: os.listdir('.')),\n"
        "                     ('up', lambda: open('../../../../etc/passwd').read())):\n"
        "        try:\n"
        "            fn()\n"
        "            out[what] = 'READ'\n"
        "        except OSError as e:\n"
        "            out[what] = type(e).__name__\n"
        "    return out\n"
    )
    out = _run(python_executor, skill(src))
    assert isinstance(out, dict) and "READ" not in out.values(), out


def test_environment_is_empty(
    python_executor: PythonExecutor, skill: MakeSkill, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASTION_TEST_SECRET_ENV", "leak")
    src = "import os\ndef run():\n    return dict(os.environ)\n"
    assert _run(python_executor, skill(src)) == {}


# -- imports -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module",
    [
        "socket",
        "subprocess",
        "ctypes",
        "_thread",
        "threading",
        "importlib",
        "sys",
        "multiprocessing",
        "signal",
    ],
)
def test_dangerous_imports_fail_clearly(
    python_executor: PythonExecutor, skill: MakeSkill, module: str
) -> None:
    err = _fail(python_executor, skill(f"import {module}\ndef run():\n    return 1\n"))
    assert err.error_code is ErrorCode.SKILL_ERROR
    assert f"module {module!r} is not available in the Bastion sandbox" in err.message


def test_import_tricks_reach_nothing(python_executor: PythonExecutor, skill: MakeSkill) -> None:
    src = (
        "import os\nbuiltins = os.sys.modules['builtins']\n"
        "def attempt(fn):\n"
        "    try:\n"
        "        return repr(fn())[:40]\n"
        "    except BaseException as e:\n"
        "        return 'blocked:' + type(e).__name__\n"
        "def run():\n"
        "    s = os.sys\n"
        "    return {\n"
        "        'dunder': attempt(lambda: __import__('socket')),\n"
        "        'builtins': attempt(lambda: builtins.__import__('subprocess')),\n"
        "        'exec': attempt(lambda: exec('import _socket', {})),\n"
        "        'modules': [m for m in ('socket', '_socket', '_thread', 'subprocess',\n"
        "                                'importlib', 'ctypes') if m in s.modules],\n"
        "        'meta_path': [type(f).__name__ for f in s.meta_path],\n"
        "        'fresh': attempt(lambda: (s.modules.pop('json'), __import__('json'))),\n"
        "        'system': hasattr(os, 'system') and attempt(lambda: os.system('id')),\n"
        "    }\n"
    )
    out = _run(python_executor, skill(src))
    assert isinstance(out, dict)
    assert out["dunder"].startswith("blocked:"), out
    assert out["builtins"].startswith("blocked:"), out
    assert out["exec"].startswith("blocked:"), out
    # the only finder serves the skill's own (read-only) folder
    assert out["modules"] == [] and out["meta_path"] == ["SkillFinder"], out
    assert out["fresh"].startswith("blocked:"), out  # nothing can be re-imported from disk
    assert out["system"] is False or out["system"].startswith("blocked:"), out


def test_wasi_sockets_cannot_connect(python_executor: PythonExecutor, skill: MakeSkill) -> None:
    # Even with the socket module in hand, WASI grants no network: the host's server sees nothing.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(0.5)
    port = srv.getsockname()[1]
    src = (
        "import os\n"
        "def run():\n"
        "    for name in ('_socket', 'socket'):\n"
        "        m = os.sys.modules.get(name)\n"
        "        if m is not None:\n"
        "            s = m.socket(m.AF_INET, m.SOCK_STREAM)\n"
        f"            s.connect(('127.0.0.1', {port}))\n"
        "            return 'connected'\n"
        "    return 'no socket module'\n"
    )
    try:
        result = python_executor.execute(skill(src))
        assert result != b'"connected"'
    except ExecutionError:
        pass
    with pytest.raises(OSError):
        srv.accept()
    srv.close()


# -- mounts --------------------------------------------------------------------------------------


def test_read_only_mount_refuses_writes(
    python_executor: PythonExecutor, skill: MakeSkill, tmp_path: Path
) -> None:
    data = tmp_path / "ro"
    data.mkdir()
    (data / "in.txt").write_text("hello")
    src = (
        "def run():\n"
        "    text = open('/data/in.txt').read()\n"
        "    try:\n"
        "        open('/data/out.txt', 'w').write('x')\n"
        "        wrote = True\n"
        "    except OSError:\n"
        "        wrote = False\n"
        "    return {'text': text, 'wrote': wrote}\n"
    )
    caps = Capabilities(mounts=(Mount("/data", data, writable=False),))
    assert _run(python_executor, skill(src, caps=caps)) == {"text": "hello", "wrote": False}
    assert not (data / "out.txt").exists()


def test_writable_mount_accepts_writes(
    python_executor: PythonExecutor, skill: MakeSkill, tmp_path: Path
) -> None:
    data = tmp_path / "rw"
    data.mkdir()
    src = (
        "import pathlib\ndef run():\n"
        "    pathlib.Path('/out/result.txt').write_text('done')\n"
        "    return sorted(p.name for p in pathlib.Path('/out').iterdir())\n"
    )
    caps = Capabilities(mounts=(Mount("/out", data, writable=True),))
    assert _run(python_executor, skill(src, caps=caps)) == ["result.txt"]
    assert (data / "result.txt").read_text() == "done"


def test_mount_cannot_be_escaped(
    python_executor: PythonExecutor, skill: MakeSkill, tmp_path: Path
) -> None:
    data = tmp_path / "box"
    data.mkdir()
    (tmp_path / "outside.txt").write_text("secret")
    src = (
        "def run():\n    try:\n        return open('/data/../outside.txt').read()\n"
        "    except OSError as e:\n        return type(e).__name__\n"
    )
    caps = Capabilities(mounts=(Mount("/data", data, writable=True),))
    assert _run(python_executor, skill(src, caps=caps)) != "secret"


# -- secrets, network ----------------------------------------------------------------------------


def test_secrets_only_when_granted(
    python_executor: PythonExecutor, skill: MakeSkill, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTHER_TOKEN", "host-value")
    src = (
        "from bastion_sdk import secret, SecretNotGranted\n"
        "def run():\n"
        "    try:\n        other = secret('OTHER_TOKEN')\n"
        "    except SecretNotGranted as e:\n        other = str(e)\n"
        "    return {'key': secret('API_KEY'), 'other': other}\n"
    )
    caps = Capabilities(secrets={"API_KEY": "k-123"})
    assert _run(python_executor, skill(src, caps=caps)) == {
        "key": "k-123",
        "other": "secret 'OTHER_TOKEN' is not granted to this skill",
    }


class _Handler(BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        body = json.dumps({"path": self.path}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(201)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

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


def _net_caps(url: str) -> Capabilities:
    netrule = pytest.importorskip("bastion.netrule")
    pytest.importorskip("bastion.sandbox.hostnet")
    return Capabilities(
        network=(netrule.NetRule.parse(url),), private_allow=(ipaddress.ip_network("127.0.0.1/32"),)
    )


def test_http_to_granted_host(
    python_executor: PythonExecutor, skill: MakeSkill, http_server: str
) -> None:
    src = (
        "from bastion_sdk import http\n"
        f"def run():\n    r = http.get('{http_server}/hello')\n"
        f"    p = http.post('{http_server}/echo', body=bytes(range(256)) * 4096)\n"
        "    return {'status': r.status, 'json': r.json(), 'post': p.status,\n"
        "            'same': p.body == bytes(range(256)) * 4096}\n"
    )
    audit = AuditLog()
    out = _run(python_executor, skill(src, caps=_net_caps(http_server), audit=audit))
    assert out == {"status": 200, "json": {"path": "/hello"}, "post": 201, "same": True}


def test_http_to_non_granted_host_is_denied(
    python_executor: PythonExecutor, skill: MakeSkill, http_server: str
) -> None:
    before = _Handler.hits
    src = (
        "from bastion_sdk import http, NetworkDenied\n"
        f"def run():\n    try:\n        http.get('{http_server}/x')\n"
        "    except NetworkDenied as e:\n        return 'denied'\n    return 'reached'\n"
    )
    assert _run(python_executor, skill(src)) == "denied"
    # An uncaught denial is reported with the host's code.
    src2 = (
        f"from bastion_sdk import http\ndef run():\n    return http.get('{http_server}/x').status\n"
    )
    err = _fail(python_executor, skill(src2))
    assert err.error_code is ErrorCode.NETWORK_DENIED
    assert _Handler.hits == before


# -- limits --------------------------------------------------------------------------------------


def test_infinite_loop_times_out(python_executor: PythonExecutor, skill: MakeSkill) -> None:
    err = _fail(
        python_executor,
        skill("def run():\n    while True:\n        pass\n", limits=Limits(timeout_ms=300)),
    )
    assert err.error_code is ErrorCode.TIMEOUT


@pytest.mark.parametrize(
    "expr",
    ["'x' * 10**10", "'x' * 10**9", "[0] * 10**9", "[bytearray(2**20) for _ in range(10**4)]"],
)
def test_memory_bombs_hit_memory_limit(
    python_executor: PythonExecutor, skill: MakeSkill, expr: str
) -> None:
    err = _fail(
        python_executor,
        skill(f"def run():\n    x = {expr}\n    return 1\n", limits=Limits(memory_mb=128)),
    )
    assert err.error_code is ErrorCode.MEMORY_LIMIT, err


def test_recursion_bomb_is_an_error_not_a_crash(
    python_executor: PythonExecutor, skill: MakeSkill
) -> None:
    src = "def f(n):\n    return f(n + 1) + 1\ndef run():\n    return f(0)\n"
    err = _fail(python_executor, skill(src))
    assert err.error_code is ErrorCode.SKILL_ERROR
    assert err.message.startswith("RecursionError")


def test_deep_native_recursion_traps_cleanly(
    python_executor: PythonExecutor, skill: MakeSkill
) -> None:
    src = (
        "import os\ndef f(n):\n    return f(n + 1) + 1\n"
        "def run():\n    os.sys.setrecursionlimit(10**7)\n    return f(0)\n"
    )
    err = _fail(python_executor, skill(src))
    assert err.error_code in (ErrorCode.SKILL_CRASHED, ErrorCode.SKILL_ERROR)
    # and the host is fine: the next call works
    assert python_executor.execute(skill("def run():\n    return 2\n")) == b"2"


def test_printing_100_mb_is_bounded(python_executor: PythonExecutor, skill: MakeSkill) -> None:
    src = "def run():\n    for _ in range(100):\n        print('x' * 2**20)\n    return 1\n"
    err = _fail(python_executor, skill(src, limits=Limits(output_kb=64)))
    assert err.error_code is ErrorCode.OUTPUT_LIMIT


def test_large_result_is_output_limit(python_executor: PythonExecutor, skill: MakeSkill) -> None:
    err = _fail(
        python_executor,
        skill("def run():\n    return 'x' * 200_000\n", limits=Limits(output_kb=64)),
    )
    assert err.error_code is ErrorCode.OUTPUT_LIMIT


def test_exit_is_reported(python_executor: PythonExecutor, skill: MakeSkill) -> None:
    err = _fail(python_executor, skill("def run():\n    raise SystemExit(3)\n"))
    assert err.error_code is ErrorCode.SKILL_ERROR
    assert "exit(3)" in err.message


def test_state_does_not_survive_between_calls(
    python_executor: PythonExecutor, skill: MakeSkill
) -> None:
    src = (
        "import json, os\nbuiltins = os.sys.modules['builtins']\nSEEN = []\n"
        "def run():\n"
        "    json.MARK = getattr(json, 'MARK', 0) + 1\n"
        "    builtins.LEAK = getattr(builtins, 'LEAK', 0) + 1\n"
        "    SEEN.append(1)\n"
        "    return [json.MARK, builtins.LEAK, len(SEEN)]\n"
    )
    req = skill(src)
    assert _run(python_executor, req) == [1, 1, 1]
    assert _run(python_executor, skill(src)) == [1, 1, 1]


def test_concurrent_calls_are_isolated(python_executor: PythonExecutor, skill: MakeSkill) -> None:
    src = "def run(i: int):\n    return i * i\n"
    results: dict[int, bytes] = {}

    def call(i: int) -> None:
        results[i] = python_executor.execute(skill(src, {"i": i}, name=f"s{i}.py"))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: str(i * i).encode() for i in range(8)}
