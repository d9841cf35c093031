"""The conformance kit's recording stub: no request leaves the host unless ``--live``.

A recording server on 127.0.0.1 stands in for "the outside": every skill below is granted it,
and offline it must receive nothing (``--live`` is the anchor that shows it would). The stub is
exercised for Python skills through the kit (worker processes) and a kernel in thread mode,
and for WASI modules in-process and in a worker (components: ``test_component_stub.py``)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from bastion.errors import ConfigError
from bastion.executor import Capabilities, ExecutionRequest, Limits
from bastion.httpfixtures import HttpFixture, HttpFixtures, load_http_fixtures
from bastion.kernel import Kernel
from bastion.netrule import NetRule
from bastion.policy import load_policy
from bastion.testing import check_pack, run_conformance
from tests.httpservers import LocalServer

pytestmark = pytest.mark.slow

FETCH = '''
from bastion_sdk import http, secret


def run(q: str) -> dict[str, object]:
    """Look items up in the catalogue API and return them with the status."""
    r = http.post(
        "https://api.example.org/v1/items?q=" + q,
        json={"q": q},
        headers={"Authorization": "Bearer " + secret("CATALOGUE_TOKEN"), "X-Trace": "t1"},
    )
    return {"status": r.status, "items": r.json()["items"]}
'''
FETCH_TOML = """
name = "fetch"
version = "1.0.0"
runtime = "python"
entry = "skill.py"
output_schema = { type = "object" }

[permissions]
network = ["https://api.example.org"]
secrets = ["CATALOGUE_TOKEN"]

[[examples]]
input = { q = "tea" }
output = { status = 200, items = ["green", "black"] }
"""
FETCH_FIXTURES = """
[[response]]
method = "POST"
url = "https://api.example.org/v1/items?q=tea"
headers = { "content-type" = "application/json" }
body = '{"items": ["green", "black"]}'
"""
UNFIXTURED = '''
from bastion_sdk import http


def run() -> dict[str, int]:
    """Fetch a catalogue page that has no fixture, and return its status."""
    return {"status": http.get("https://api.example.org/v2/missing").status}
'''
UNFIXTURED_TOML = """
name = "unfixtured"
version = "1.0.0"
runtime = "python"
entry = "skill.py"
output_schema = { type = "object" }

[permissions]
network = ["https://api.example.org"]

[[examples]]
input = {}
output = { status = 200 }
"""
LOOPBACK = '''
from bastion_sdk import http


def run() -> dict[str, object]:
    """Ping the local service and return its status and answer text."""
    r = http.get("{url}/ping")
    return {{"status": r.status, "text": r.text}}
'''
LOOPBACK_TOML = """
name = "loopback"
version = "1.0.0"
runtime = "python"
entry = "skill.py"
output_schema = {{ type = "object" }}

[permissions]
network = ["{url}"]

[[examples]]
input = {{}}
output = {{ status = 200, text = "pong" }}
"""


@pytest.fixture
def outside() -> Iterator[LocalServer]:
    """A recording server standing in for every real host: offline, it must get nothing."""
    with LocalServer() as srv:
        srv.reply("/ping", body=b"pong")
        yield srv


def _write(folder: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _pack(root: Path, base: str, skills: tuple[str, ...]) -> Path:
    root.mkdir(parents=True)
    names = ", ".join(f'"{s}"' for s in skills)
    (root / "bastion-pack.toml").write_text(
        f'name = "stubbed"\nversion = "1.0.0"\nskills = [{names}]\n'
    )
    files = {
        "fetch": {
            "fetch/skill.py": FETCH,
            "fetch/skill.toml": FETCH_TOML,
            "fetch/fixtures/http.toml": FETCH_FIXTURES,
        },
        "unfixtured": {"unfixtured/skill.py": UNFIXTURED, "unfixtured/skill.toml": UNFIXTURED_TOML},
        "loopback": {
            "loopback/skill.py": LOOPBACK.format(url=base),
            "loopback/skill.toml": LOOPBACK_TOML.format(url=base),
        },
    }
    for name in skills:
        _write(root, files[name])
    # The pack-level fixtures answer the loopback skill's ping.
    _write(
        root,
        {
            "fixtures/http.toml": (
                f'[[response]]\nurl = "{base}/ping"\nheaders = {{ "content-type" = '
                '"text/plain" }\nbody = "pong"\n'
            )
        },
    )
    return root


class TestKitOffline:
    def test_an_example_that_fetches_passes_against_its_fixture_and_is_recorded(
        self, tmp_path: Path, outside: LocalServer, runner_ready: None
    ) -> None:
        pack = _pack(tmp_path / "pack", outside.url("").rstrip("/"), ("fetch", "loopback"))
        report = check_pack(pack, fuzz_examples=5)
        assert report.ok, report.render()
        assert outside.requests == []  # nothing reached the "outside"
        assert not report.live
        (post,) = [r for r in report.requests["fetch"] if r["call"].startswith("example")]
        assert post["method"] == "POST"
        assert post["url"] == "https://api.example.org/v1/items?q=tea"
        assert post["fixture"] == "answered" and post["status"] == 200
        assert post["request_bytes"] == len(json.dumps({"q": "tea"}).encode())
        headers = dict(post["headers"])
        assert headers["Authorization"] == "[REDACTED]"  # the secret is never recorded
        assert headers["X-Trace"] == "t1"
        assert "canary-" not in json.dumps(report.to_dict())
        text = report.render()
        assert "recording stub, no request left the host" in text
        assert "POST https://api.example.org/v1/items?q=tea -> 200" in text

    def test_an_unfixtured_request_fails_the_example_with_the_url(
        self, tmp_path: Path, outside: LocalServer, runner_ready: None
    ) -> None:
        pack = _pack(tmp_path / "pack", outside.url("").rstrip("/"), ("unfixtured",))
        report = check_pack(pack, fuzz_examples=0)
        assert report.failed_checks() == {"examples"}, report.render()
        (failure,) = report.failures("examples")
        assert "example 1 requested GET https://api.example.org/v2/missing, which has no " in (
            failure.message
        )
        assert "unfixtured/fixtures/http.toml" in failure.message
        (req,) = report.requests["unfixtured"]
        assert req["fixture"] == "missing"
        assert "GET https://api.example.org/v2/missing -> no fixture" in report.render()
        assert outside.requests == []

    def test_live_reaches_the_real_network_path(
        self, tmp_path: Path, outside: LocalServer, runner_ready: None
    ) -> None:
        """The anchor: the same pack with --live does reach the recording server."""
        pack = _pack(tmp_path / "pack", outside.url("").rstrip("/"), ("loopback",))
        report = check_pack(pack, fuzz_examples=0, live=True)
        assert report.ok, report.render()
        assert report.live
        assert [r.path for r in outside.requests] == ["/ping"]
        assert "fixture" not in report.requests["loopback"][0]

    def test_bastion_test_cli_flags(
        self, tmp_path: Path, outside: LocalServer, runner_ready: None
    ) -> None:
        import io

        pack = _pack(tmp_path / "pack", outside.url("").rstrip("/"), ("loopback",))
        out = io.StringIO()
        assert run_conformance(pack, json_report=tmp_path / "r.json", stream=out) == 0
        doc = json.loads((tmp_path / "r.json").read_text())
        assert doc["live"] is False and doc["requests"]["loopback"][0]["fixture"] == "answered"
        assert outside.requests == []


def test_a_malformed_fixtures_file_is_a_manifest_failure_naming_it(
    tmp_path: Path, outside: LocalServer, runner_ready: None
) -> None:
    pack = _pack(tmp_path / "pack", outside.url("").rstrip("/"), ("fetch",))
    (pack / "fetch" / "fixtures" / "http.toml").write_text(
        '[[response]]\nurl = "ftp://api.example.org/x"\n'
    )
    report = check_pack(pack, fuzz_examples=0)
    messages = [r.message for r in report.failures("manifest")]
    assert any("fixture url 'ftp://api.example.org/x' is not a valid" in m for m in messages)
    assert outside.requests == []


class TestFixtureFiles:
    def test_entries_and_the_fixture_folder(self, tmp_path: Path) -> None:
        _write(
            tmp_path,
            {
                "s/fixtures/http.toml": (
                    '[[response]]\nurl = "https://A.example.org/x?y=1"\nstatus = 404\n'
                    'body_file = "x.bin"\n'
                ),
                "s/fixtures/x.bin": "raw",
                "fixtures/http/index.html": "<p>hi</p>",
                "fixtures/http/docs/index.html": "<p>docs</p>",
            },
        )
        fx = load_http_fixtures(tmp_path / "s", tmp_path, files_origin="http://f.test")
        hit = fx.find("GET", "https://a.example.org/x?y=1")  # canonical host
        assert hit is not None and (hit.status, hit.body) == (404, b"raw")
        assert fx.find("POST", "https://a.example.org/x?y=1") is None
        head = fx.find("HEAD", "https://a.example.org/x?y=1")
        assert head is not None and head.body == b""
        for url in ("http://f.test/", "http://f.test/index.html"):
            page = fx.find("GET", url)
            assert page is not None and page.body == b"<p>hi</p>"
            assert ("Content-Type", "text/html") in page.headers
        docs = fx.find("GET", "http://f.test/docs/")
        assert docs is not None and docs.body == b"<p>docs</p>"
        assert HttpFixtures.from_wire(json.loads(json.dumps(fx.to_wire()))) == fx

    def test_fixtures_too_large_to_travel_are_refused(self, tmp_path: Path) -> None:
        _write(
            tmp_path,
            {"s/fixtures/http.toml": '[[response]]\nurl = "https://a.example"\nbody_file = "b"\n'},
        )
        (tmp_path / "s" / "fixtures" / "b").write_bytes(b"x" * (3 << 20))
        with pytest.raises(ConfigError, match="the limit is 500 responses and 2097152 bytes"):
            load_http_fixtures(tmp_path / "s", tmp_path)

    @pytest.mark.parametrize(
        ("text", "phrase"),
        [
            ('[[response]]\nurl = "https://a.example"\nmethod = "BREW"\n', "method 'BREW'"),
            ('[[response]]\nurl = "https://a.example"\nstatus = 42\n', "status 42"),
            (
                '[[response]]\nurl = "https://a.example"\nbody_file = "../../etc/passwd"\n',
                "not a file beside",
            ),
            ('[[response]]\nurl = "https://a.example"\ncolour = "red"\n', "unknown key 'colour'"),
            ('[[response]]\nmethod = "GET"\n', 'needs url = "https://..."'),
        ],
    )
    def test_bad_entries_are_refused_by_name(self, tmp_path: Path, text: str, phrase: str) -> None:
        _write(tmp_path, {"s/fixtures/http.toml": text})
        with pytest.raises(ConfigError, match=phrase.replace("(", r"\(").replace(".", r"\.")):
            load_http_fixtures(tmp_path / "s", tmp_path)


# -- every runtime: the seam is in hostnet, under hostabi (WASI) and hostlink (component, Python)


def _wasi_request(entry: Path, command: str, caps: Capabilities, audit: list) -> ExecutionRequest:
    return ExecutionRequest(
        skill="w",
        version="1.0.0",
        runtime="wasm",
        entry=entry,
        folder=entry.parent,
        input=None,
        input_json=command,
        caps=caps,
        limits=Limits(timeout_ms=5000),
        deadline=time.monotonic() + 5,
        invocation_id="inv-stub",
        logger=structlog.get_logger("test.stub"),
        audit=lambda kind, fields: audit.append((kind, dict(fields))),
    )


@pytest.fixture
def hostcalls(tmp_path: Path) -> Path:
    from tests.sandbox.guestbuild import GUESTS, build_c

    out = tmp_path / "wasi" / "hostcalls.wasm"
    out.parent.mkdir()
    out.write_bytes(build_c(GUESTS / "hostcalls.c"))
    return out


def _http_command(url: str) -> str:
    return "http " + json.dumps({"method": "GET", "url": url})


@pytest.mark.parametrize("where", ["in-process", "worker"])
def test_a_wasi_module_is_answered_by_the_stub(
    where: str, hostcalls: Path, outside: LocalServer
) -> None:
    from bastion.cachedir import default_cache_root
    from bastion.sandbox.wasi_module import WasiModuleExecutor
    from bastion.sandbox.workers import WorkerPool, WorkerSettings

    url = outside.url("/ping")
    rule = NetRule.parse(outside.url("").rstrip("/"))
    fixture = HttpFixture("GET", url, 203, (("content-type", "text/plain"),), b"stubbed")
    local = WasiModuleExecutor()
    local.prepare(hostcalls)
    pool = WorkerPool(
        WorkerSettings(count=1, read_paths=(str(hostcalls.parent),)),
        cache_root=default_cache_root(),
    )
    run = local.execute if where == "in-process" else pool.run
    try:
        for stub, expect in ((HttpFixtures((fixture,)), 203), (HttpFixtures(), None)):
            audit: list = []
            caps = Capabilities(network=(rule,), http_stub=stub)
            out = json.loads(run(_wasi_request(hostcalls, _http_command(url), caps, audit)))
            http = [f for k, f in audit if k == "http"]
            assert http and http[0]["stub"] is True
            if expect is None:
                assert out["error"]["message"].startswith(f"no fixture for GET {url}")
                assert http[0]["fixture"] == "missing"
            else:
                assert out["status"] == expect
                assert base64.b64decode(out["body_b64"]) == b"stubbed"
                assert http[0]["fixture"] == "answered"
        assert outside.requests == []
        # The anchor: without the stub, the same call reaches the server.
        audit = []
        out = json.loads(
            run(_wasi_request(hostcalls, _http_command(url), Capabilities(network=(rule,)), audit))
        )
        assert out["status"] == 200 and len(outside.requests) == 1
    finally:
        pool.close()
        local.close()


def test_a_kernel_in_thread_mode_stubs_a_python_skill(
    tmp_path: Path, outside: LocalServer, runner_ready: None
) -> None:
    pack = _pack(tmp_path / "pack", outside.url("").rstrip("/"), ("loopback",))
    base = outside.url("").rstrip("/")
    policy = load_policy(
        text=f'[workers]\nisolation = "thread"\n[skills.loopback]\nnetwork = ["{base}"]\n'
    )
    fixtures = load_http_fixtures(pack / "loopback", pack)
    with Kernel(
        policy, pack_paths=[pack], entry_points=False, environ={}, http_stubs={"loopback": fixtures}
    ) as kernel:
        result = kernel.invoke("loopback", {})
        assert result.ok, result.error
        assert result.output == {"status": 200, "text": "pong"}
    assert outside.requests == []
