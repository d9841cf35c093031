"""The mediated HTTP client, attacked through real servers on 127.0.0.1 and a test resolver."""

from __future__ import annotations

import ipaddress
import json
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from bastion.errors import ErrorCode, ExecutionError
from bastion.executor import IPNetwork
from bastion.netrule import IPAddress, NetRule
from bastion.sandbox.hostnet import HostHttp, HttpResponse
from tests.httpservers import LocalServer, RecordedRequest, Reply, StaticResolver, self_signed

LOCAL: tuple[IPNetwork, ...] = (ipaddress.ip_network("127.0.0.1/32"),)
MiB = 1024 * 1024


@pytest.fixture
def srv() -> Iterator[LocalServer]:
    with LocalServer() as server:
        server.reply("/hello", b"hello")
        server.echo("/echo")
        yield server


class Audit:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, fields: Mapping[str, Any]) -> None:
        self.events.append((kind, dict(fields)))

    @property
    def last(self) -> dict[str, Any]:
        return self.events[-1][1]


Make = Callable[..., HostHttp]


@pytest.fixture
def make(srv: LocalServer) -> Iterator[Make]:
    """Build a HostHttp granted ``rules`` ({port} filled in), resolving test names."""
    made: list[HostHttp] = []

    def build(
        rules: Sequence[str] = ("http://api.test:{port}",),
        private_allow: Sequence[IPNetwork] = LOCAL,
        names: Mapping[str, Sequence[str]] | None = None,
        resolver: Any = None,
        seconds: float = 30.0,
        **kw: Any,
    ) -> HostHttp:
        table: dict[str, Sequence[str]] = {"api.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]}
        table.update(names or {})
        kw.setdefault("audit", Audit())
        http = HostHttp(
            [NetRule.parse(r.format(port=srv.port)) for r in rules],
            private_allow,
            deadline=time.monotonic() + seconds,
            resolver=resolver if resolver is not None else StaticResolver(table),
            **kw,
        )
        made.append(http)
        return http

    yield build
    for http in made:
        http.close()


def denied(http: HostHttp, url: str, **kw: Any) -> ExecutionError:
    with pytest.raises(ExecutionError) as info:
        http.request(kw.pop("method", "GET"), url, **kw)
    assert info.value.error_code is ErrorCode.NETWORK_DENIED, info.value
    return info.value


def failed(code: ErrorCode, http: HostHttp, url: str, **kw: Any) -> ExecutionError:
    with pytest.raises(ExecutionError) as info:
        http.request(kw.pop("method", "GET"), url, **kw)
    assert info.value.error_code is code, info.value
    return info.value


def echoed(resp: HttpResponse) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(resp.body)
    doc["h"] = {k.lower(): v for k, v in doc["headers"]}
    return doc


# -- reaching the local server ------------------------------------------------------------


def test_policy_allowing_127_reaches_the_server_by_name(srv: LocalServer, make: Make) -> None:
    audit = Audit()
    http = make(audit=audit)
    resp = http.request("GET", srv.url("/hello", host="api.test"))
    assert (resp.status, resp.body) == (200, b"hello")
    assert resp.url == f"http://api.test:{srv.port}/hello"
    assert ("content-length", "5") in [(k.lower(), v) for k, v in resp.headers]
    # "api.test" exists only in the test resolver: the connection went to the checked address.
    assert srv.requests[0].header("Host") == f"api.test:{srv.port}"
    ((kind, event),) = audit.events
    assert kind == "http"
    assert event["method"] == "GET" and event["url"] == resp.url
    assert event["status"] == 200 and event["bytes"] == 5 and event["duration_ms"] >= 0


def test_a_rule_naming_the_ip_reaches_it_without_allow_private(
    srv: LocalServer, make: Make
) -> None:
    http = make(rules=["http://127.0.0.1:{port}"], private_allow=())
    assert http.request("GET", srv.url("/hello")).body == b"hello"
    # The same address spelled as libc would read it is the same address, so the same rule.
    assert http.request("GET", f"http://2130706433:{srv.port}/hello").body == b"hello"
    assert http.request("GET", f"http://0x7f.1:{srv.port}/hello").body == b"hello"


def test_dns_is_resolved_once_and_the_checked_address_is_used(srv: LocalServer, make: Make) -> None:
    class Rebinding:
        calls = 0

        def resolve(self, host: str, port: int) -> list[IPAddress]:
            self.calls += 1
            first = self.calls == 1
            return [ipaddress.ip_address("127.0.0.1" if first else "169.254.169.254")]

    resolver = Rebinding()
    http = make(resolver=resolver)
    assert http.request("GET", srv.url("/hello", host="api.test")).body == b"hello"
    assert resolver.calls == 1
    # The next request resolves again, sees the metadata address and is refused.
    err = denied(http, srv.url("/hello", host="api.test"))
    assert "metadata" in err.message
    assert len(srv.requests) == 1


# -- refusals before any connection -------------------------------------------------------


def test_non_granted_host_is_refused_with_the_fix(srv: LocalServer, make: Make) -> None:
    audit = Audit()
    resolver = StaticResolver({"other.test": ["127.0.0.1"]})
    http = make(audit=audit, resolver=resolver)
    err = denied(http, srv.url("/hello", host="other.test"))
    assert (
        f'add "http://other.test:{srv.port}" to [skills.NAME] network in bastion.toml'
        in err.message
    )
    assert srv.requests == [] and resolver.calls == []
    assert audit.last["denied"] == "not granted"
    assert audit.last["url"] == srv.url("/hello", host="other.test")


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("169.254.169.254", "metadata"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.0.0.5", "private"),
        ("0.0.0.0", "unspecified"),
    ],
)
def test_names_resolving_to_special_addresses_are_refused(
    srv: LocalServer, make: Make, address: str, reason: str
) -> None:
    audit = Audit()
    http = make(private_allow=(), names={"api.test": [address]}, audit=audit)
    err = denied(http, srv.url("/hello", host="api.test"))
    assert f"'api.test' resolves to a {reason} address" in err.message
    assert "allow_private" not in err.message and "will not suggest allowing" in err.message
    shown = str(ipaddress.ip_address(address))
    assert shown not in err.message and err.detail and shown in err.detail
    assert srv.requests == []
    assert audit.last["denied"] == f"special address: {reason}"


def test_one_special_address_among_public_ones_refuses_the_name(
    srv: LocalServer, make: Make
) -> None:
    http = make(private_allow=(), names={"api.test": ["93.184.216.34", "127.0.0.1"]})
    assert "loopback" in denied(http, srv.url("/hello", host="api.test")).message
    assert srv.requests == []


def test_allow_private_is_exact(srv: LocalServer, make: Make) -> None:
    http = make(private_allow=(ipaddress.ip_network("127.0.0.2/32"),))
    denied(http, srv.url("/hello", host="api.test"))
    http = make(
        private_allow=(ipaddress.ip_network("127.0.0.1/32"),),
        names={"api.test": ["::ffff:127.0.0.1"]},
    )
    denied(http, srv.url("/hello", host="api.test"))
    assert srv.requests == []


@pytest.mark.parametrize(
    "host",
    [
        "2130706433",
        "0177.0.0.1",
        "0x7f.1",
        "127.1",
        "0x7f000001",
        "[::ffff:127.0.0.1]",
        "127.0.0.1",
    ],
)
def test_numeric_spellings_of_loopback_are_not_names(
    srv: LocalServer, make: Make, host: str
) -> None:
    http = make(rules=["http://api.test:{port}", "http://*.test:{port}"])
    denied(http, f"http://{host}:{srv.port}/hello")
    assert srv.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "http://api.test:{port}@127.0.0.1:{port}/hello",
        "http://api.test@127.0.0.1:{port}/hello",
        "http://127.0.0.1:{port}\\@api.test:{port}/hello",
        "http://api.test:{port}\t/hello",
        "file:///etc/passwd",
        "http://api.test:{port}:{port}/",
    ],
)
def test_url_tricks_are_refused(srv: LocalServer, make: Make, url: str) -> None:
    audit = Audit()
    http = make(rules=["http://api.test:{port}"], audit=audit)
    err = denied(http, url.format(port=srv.port))
    assert err.message.startswith("request refused: URL")
    assert audit.last["denied"] == "invalid url"
    assert srv.requests == []


def test_wildcard_rule_reaches_subdomains_not_the_apex(srv: LocalServer, make: Make) -> None:
    http = make(
        rules=["http://*.api.test:{port}"],
        names={"x.api.test": ["127.0.0.1"], "a.b.api.test": ["127.0.0.1"]},
    )
    assert http.request("GET", srv.url("/hello", host="x.api.test")).status == 200
    assert http.request("GET", srv.url("/hello", host="A.B.API.TEST.")).status == 200
    denied(http, srv.url("/hello", host="api.test"))
    assert len(srv.requests) == 2


# -- redirects ------------------------------------------------------------------------------


def test_redirects_within_the_grant_are_followed(srv: LocalServer, make: Make) -> None:
    srv.redirect("/a", "/b", 301)
    srv.redirect("/b", f"http://other.test:{srv.port}/hello", 308)
    audit = Audit()
    http = make(rules=["http://api.test:{port}", "http://other.test:{port}"], audit=audit)
    resp = http.request("GET", srv.url("/a", host="api.test"))
    assert (resp.status, resp.body, resp.url) == (200, b"hello", srv.url("/hello", "other.test"))
    assert [e["status"] for _, e in audit.events] == [301, 308, 200]


@pytest.mark.parametrize(
    "location",
    [
        "http://evil.test:{port}/hello",
        "http://127.0.0.1:{port}/hello",
        "http://169.254.169.254/latest/meta-data/",
        "http://2130706433:{port}/hello",
        "https://api.test:{port}/hello",
        "//evil.test:{port}/hello",
    ],
)
def test_redirect_to_a_non_granted_place_is_refused(
    srv: LocalServer, make: Make, location: str
) -> None:
    srv.redirect("/r", location.format(port=srv.port))
    http = make(names={"evil.test": ["127.0.0.1"]})
    err = denied(http, srv.url("/r", host="api.test"))
    assert "redirected from" in err.message and "not granted" in err.message
    assert [r.path for r in srv.requests] == ["/r"]


def test_redirect_to_a_granted_name_on_a_metadata_address_is_refused(
    srv: LocalServer, make: Make
) -> None:
    srv.redirect("/r", "http://meta.test/latest/meta-data/")
    http = make(
        rules=["http://api.test:{port}", "http://meta.test"],
        names={"meta.test": ["169.254.169.254"]},
    )
    err = denied(http, srv.url("/r", host="api.test"))
    assert "metadata" in err.message
    assert [r.path for r in srv.requests] == ["/r"]


def test_invalid_redirect_location_is_refused(srv: LocalServer, make: Make) -> None:
    srv.redirect("/r", "http://api.test@127.0.0.1/")
    err = denied(make(), srv.url("/r", host="api.test"))
    assert "redirected to an invalid URL" in err.message


@pytest.mark.parametrize("limit", [5, 2, 0])
def test_redirect_loops_stop_after_max_redirects(srv: LocalServer, make: Make, limit: int) -> None:
    srv.redirect("/loop", "/loop")
    audit = Audit()
    err = denied(make(max_redirects=limit, audit=audit), srv.url("/loop", host="api.test"))
    assert f"more than {limit} redirects" in err.message
    assert len(srv.requests) == limit + 1
    assert audit.last["denied"] == "too many redirects"


def test_303_and_post_302_become_get_without_body(srv: LocalServer, make: Make) -> None:
    srv.redirect("/see", "/echo", 303)
    srv.redirect("/found", "/echo", 302)
    srv.redirect("/temp", "/echo", 307)
    http = make()
    hs = [("Content-Type", "text/plain")]
    for path, method, body in (
        ("/see", "GET", ""),
        ("/found", "GET", ""),
        ("/temp", "POST", "data"),
    ):
        doc = echoed(http.request("POST", srv.url(path, "api.test"), hs, b"data"))
        assert (doc["method"], doc["body"]) == (method, body), path
        assert ("content-type" in doc["h"]) == (method == "POST")
    doc = echoed(http.request("PUT", srv.url("/found", "api.test"), hs, b"data"))
    assert (doc["method"], doc["body"]) == ("PUT", "data")


def test_credentials_are_dropped_when_the_origin_changes(srv: LocalServer, make: Make) -> None:
    srv.redirect("/same", "/echo")
    srv.redirect("/away", f"http://other.test:{srv.port}/away2")
    srv.redirect("/away2", f"http://api.test:{srv.port}/echo")
    http = make(
        rules=["http://api.test:{port}", "http://other.test:{port}"], secrets=["s3cr3t-value"]
    )
    hs = [
        ("Authorization", "Bearer tok"),
        ("Cookie", "a=b"),
        ("X-Api-Key", "s3cr3t-value"),
        ("X-Sig", "v1 s3cr3t-value"),
        ("X-Plain", "keep"),
    ]
    same = echoed(http.request("GET", srv.url("/same", "api.test"), hs))["h"]
    assert same["authorization"] == "Bearer tok" and same["cookie"] == "a=b"
    assert same["x-api-key"] == "s3cr3t-value" and same["x-plain"] == "keep"
    # Away and back again: once dropped, credentials stay dropped.
    away = echoed(http.request("GET", srv.url("/away", "api.test"), hs))["h"]
    assert away["x-plain"] == "keep"
    for name in ("authorization", "cookie", "x-api-key", "x-sig"):
        assert name not in away
    assert srv.requests[-2].header("Authorization") is None  # at other.test too


def test_a_port_change_is_an_origin_change(make: Make) -> None:
    with LocalServer() as a, LocalServer() as b:
        b.echo("/echo")
        a.redirect("/r", b.url("/echo", "api.test"))
        http = make(rules=[f"http://api.test:{a.port}", f"http://api.test:{b.port}"])
        doc = echoed(http.request("GET", a.url("/r", "api.test"), [("Authorization", "x")]))
        assert "authorization" not in doc["h"]


# -- limits ---------------------------------------------------------------------------------


def _huge(srv: LocalServer, path: str, total: int, content_length: bool) -> None:
    chunk = b"x" * 65536
    srv.stream(
        path,
        lambda: (chunk for _ in range(total // len(chunk))),
        content_length=total if content_length else None,
    )


@pytest.mark.parametrize("content_length", [False, True])
def test_huge_response_is_stopped_at_the_cap(
    srv: LocalServer, make: Make, content_length: bool
) -> None:
    total = 256 * MiB
    _huge(srv, "/huge", total, content_length)
    audit = Audit()
    http = make(max_response_bytes=1 * MiB, audit=audit)
    err = failed(ErrorCode.OUTPUT_LIMIT, http, srv.url("/huge", "api.test"))
    assert str(1 * MiB) in err.message
    assert audit.last["error"] == "OUTPUT_LIMIT" and audit.last["bytes"] <= 1 * MiB
    rec = srv.requests[0]
    assert rec.done.wait(30), "the server should stop once the client hangs up"
    assert rec.error is not None  # the client hung up mid-body...
    assert rec.bytes_sent < total  # ...so most of the body was never sent


def test_response_exactly_at_the_cap_is_returned(srv: LocalServer, make: Make) -> None:
    srv.reply("/k", b"y" * 1024)
    assert len(make(max_response_bytes=1024).request("GET", srv.url("/k", "api.test")).body) == 1024
    failed(ErrorCode.OUTPUT_LIMIT, make(max_response_bytes=1023), srv.url("/k", "api.test"))


def test_server_that_never_answers_is_stopped_at_the_deadline(srv: LocalServer, make: Make) -> None:
    def stall(_r: RecordedRequest) -> Reply:
        srv.pause(60)
        return Reply(200, [], b"late")

    srv.route("/stall", stall)
    audit = Audit()
    err = failed(ErrorCode.TIMEOUT, make(seconds=0.5, audit=audit), srv.url("/stall", "api.test"))
    assert err.retryable
    assert audit.last["error"] == "TIMEOUT"


def test_trickling_body_is_stopped_at_the_deadline(srv: LocalServer, make: Make) -> None:
    srv.stream("/trickle", lambda: srv.slow_chunks(b"z", 0.05, 1200))
    failed(ErrorCode.TIMEOUT, make(seconds=0.6), srv.url("/trickle", "api.test"))


def test_per_request_timeout_is_bounded_too(srv: LocalServer, make: Make) -> None:
    srv.stream("/trickle", lambda: srv.slow_chunks(b"z", 0.05, 1200))
    http = make(seconds=120)
    failed(ErrorCode.TIMEOUT, http, srv.url("/trickle", "api.test"), timeout_ms=400)
    assert http.request("GET", srv.url("/hello", "api.test")).body == b"hello"


def test_exhausted_deadline_sends_nothing(srv: LocalServer, make: Make) -> None:
    failed(ErrorCode.TIMEOUT, make(seconds=-1), srv.url("/hello", "api.test"))
    assert srv.requests == []


def test_slow_resolver_is_bounded_by_the_deadline(srv: LocalServer, make: Make) -> None:
    class Stuck:
        def resolve(self, host: str, port: int) -> list[IPAddress]:
            srv.pause(60)
            return [ipaddress.ip_address("127.0.0.1")]

    failed(ErrorCode.TIMEOUT, make(resolver=Stuck(), seconds=0.3), srv.url("/", "api.test"))


def test_request_body_over_the_limit_is_refused(srv: LocalServer, make: Make) -> None:
    err = failed(
        ErrorCode.SKILL_ERROR,
        make(max_request_bytes=10),
        srv.url("/echo", "api.test"),
        method="POST",
        body=b"x" * 11,
    )
    assert "11 bytes" in err.message
    assert srv.requests == []


# -- request hygiene -----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "GET / HTTP/1.1", "", "PROPFIND"])
def test_only_plain_methods_are_allowed(srv: LocalServer, make: Make, method: str) -> None:
    err = failed(ErrorCode.SKILL_ERROR, make(), srv.url("/echo", "api.test"), method=method)
    assert "GET" in err.message
    assert srv.requests == []


def test_host_and_hop_by_hop_headers_from_the_skill_are_ignored(
    srv: LocalServer, make: Make
) -> None:
    hs = [
        ("Host", "evil.test"),
        ("Connection", "upgrade"),
        ("Upgrade", "websocket"),
        ("Transfer-Encoding", "chunked"),
        ("Content-Length", "999"),
        ("X-Ok", "1"),
    ]
    doc = echoed(make().request("POST", srv.url("/echo", "api.test"), hs, b"abc"))
    assert doc["h"]["host"] == f"api.test:{srv.port}"
    assert doc["h"]["content-length"] == "3" and doc["body"] == "abc"
    assert "upgrade" not in doc["h"] and "transfer-encoding" not in doc["h"]
    assert doc["h"]["x-ok"] == "1"


@pytest.mark.parametrize(
    "header",
    [
        ("X-A", "v\r\nX-Injected: 1"),
        ("X-A", "v\nx"),
        ("X A", "v"),
        ("X-A\r\nX-B", "v"),
        ("", "v"),
        ("X-A", "v\x00"),
    ],
)
def test_header_injection_is_refused(srv: LocalServer, make: Make, header: tuple[str, str]) -> None:
    failed(ErrorCode.SKILL_ERROR, make(), srv.url("/echo", "api.test"), headers=[header])
    assert srv.requests == []


def test_cookies_are_never_stored(srv: LocalServer, make: Make) -> None:
    srv.reply("/set", b"", headers=[("Set-Cookie", "session=abc; Path=/")])
    http = make()
    http.request("GET", srv.url("/set", "api.test"))
    assert "cookie" not in echoed(http.request("GET", srv.url("/echo", "api.test")))["h"]


def test_bodies_are_not_decompressed(srv: LocalServer, make: Make) -> None:
    doc = echoed(make().request("GET", srv.url("/echo", "api.test")))
    assert doc["h"]["accept-encoding"] == "identity"


def test_connection_refused_is_a_short_skill_error(make: Make) -> None:
    with LocalServer() as gone:
        port = gone.port
    http = make(rules=[f"http://api.test:{port}"])
    err = failed(ErrorCode.SKILL_ERROR, http, f"http://api.test:{port}/")
    assert err.message == f"HTTP GET http://api.test:{port}: the connection failed"
    assert "127.0.0.1" not in err.message and "Errno" not in err.message


def test_unresolvable_name_is_a_skill_error(srv: LocalServer, make: Make) -> None:
    http = make(rules=["http://nowhere.test:{port}"])
    err = failed(ErrorCode.SKILL_ERROR, http, srv.url("/", "nowhere.test"))
    assert "could not resolve 'nowhere.test'" in err.message


def test_audit_holds_no_header_values_and_redacts_secrets(srv: LocalServer, make: Make) -> None:
    audit = Audit()
    http = make(audit=audit, secrets=["tok-123456"])
    http.request(
        "GET",
        srv.url("/hello?key=tok-123456", "api.test"),
        [("Authorization", "Bearer tok-123456"), ("X-Other", "visible-nowhere")],
    )
    denied(http, srv.url("/?key=tok-123456", "evil.test"))
    text = json.dumps(audit.events)
    assert "tok-123456" not in text and "visible-nowhere" not in text
    assert "[REDACTED:SECRET]" in audit.events[0][1]["url"]
    assert set(audit.events[0][1]) == {"method", "url", "status", "bytes", "duration_ms"}


def test_head_and_closed_client(srv: LocalServer, make: Make) -> None:
    http = make()
    resp = http.request("head", srv.url("/hello", "api.test"))
    assert (resp.status, resp.body) == (200, b"")
    with http:
        pass
    failed(ErrorCode.SKILL_ERROR, http, srv.url("/hello", "api.test"))


# -- TLS: the pinned address is used, the name is verified ----------------------------------


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_https_verifies_the_name_while_connecting_to_the_checked_address(tmp_path: Path) -> None:
    server_ctx, client_ctx = self_signed(tmp_path, "api.test")
    with LocalServer(tls=server_ctx) as tls:
        tls.reply("/hello", b"secure")
        rules = [
            NetRule.parse(f"https://api.test:{tls.port}"),
            NetRule.parse(f"https://other.test:{tls.port}"),
            NetRule.parse(f"https://127.0.0.1:{tls.port}"),
        ]
        resolver = StaticResolver({"api.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
        with HostHttp(
            rules, LOCAL, deadline=time.monotonic() + 30, resolver=resolver, ssl_context=client_ctx
        ) as http:
            resp = http.request("GET", tls.url("/hello", "api.test"))
            assert (resp.status, resp.body) == (200, b"secure")
            assert tls.sni == ["api.test"]
            # Same address, but the certificate is not for that name: refused by TLS.
            for host in ("other.test", "127.0.0.1"):
                err = failed(ErrorCode.SKILL_ERROR, http, tls.url("/hello", host))
                assert err.message.endswith("the TLS handshake failed"), err.message
