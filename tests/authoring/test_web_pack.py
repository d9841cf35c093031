"""fetch_page through the real kernel, sandbox and mediated HTTP, against local servers."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.authoring.conftest import PackRunner
from tests.httpservers import LocalServer

pytestmark = pytest.mark.slow

PAGE = b"""<html><head><title> Local  page </title><script>alert('x')</script></head>
<body><p>Hello <b>there</b>.</p><style>p{}</style><a href="/a#top">A</a><a href="/a">A</a>
<a href="http://elsewhere.test/b">B</a><a href="mailto:x@y.z">M</a></body></html>"""


def _granted(pack_runner: Callable[..., PackRunner], *origins: str) -> PackRunner:
    rules = ", ".join(f'"{o}"' for o in origins)
    return pack_runner(
        "web",
        f'[network]\nallow_private = ["127.0.0.1/32"]\n\n'
        f"[skills.fetch_page]\nnetwork = [{rules}]\n",
    )


def test_fetch_page_reads_text_title_and_links(pack_runner: Callable[..., PackRunner]) -> None:
    with LocalServer() as srv:
        srv.reply("/", PAGE, headers=[("Content-Type", "text/html; charset=utf-8")])
        web = _granted(pack_runner, srv.url("/").rstrip("/"))
        out = web.ok("fetch_page", url=srv.url("/"))
    assert out["title"] == "Local page"
    assert out["text"] == "Hello there.\nAA BM"  # link texts are page text too; no script
    assert out["links"] == [srv.url("/a"), "http://elsewhere.test/b"]
    assert out["status"] == 200


def test_fetch_page_bounds_text_and_links(pack_runner: Callable[..., PackRunner]) -> None:
    body = (
        b"<p>"
        + b"word " * 10_000
        + b"</p>"
        + b"".join(b'<a href="/p%d">x</a>' % i for i in range(1000))
    )
    with LocalServer() as srv:
        srv.reply("/big", body, headers=[("Content-Type", "text/html")])
        web = _granted(pack_runner, srv.url("/").rstrip("/"))
        out = web.ok("fetch_page", url=srv.url("/big"), max_chars=100, max_links=3)
    assert len(out["text"]) == 100 and out["truncated"] is True
    assert len(out["links"]) == 3


def test_without_a_grant_every_request_is_network_denied(
    pack_runner: Callable[..., PackRunner],
) -> None:
    with LocalServer() as srv:
        srv.reply("/", PAGE, headers=[("Content-Type", "text/html")])
        web = pack_runner("web")
        code, _ = web.error("fetch_page", url=srv.url("/"))
        assert code == "NETWORK_DENIED"
        assert srv.requests == []


def test_redirect_to_a_host_not_granted_is_refused(pack_runner: Callable[..., PackRunner]) -> None:
    with LocalServer() as good, LocalServer() as other:
        other.reply("/", b"<p>other</p>", headers=[("Content-Type", "text/html")])
        good.redirect("/go", other.url("/"))
        web = _granted(pack_runner, good.url("/").rstrip("/"))
        code, _ = web.error("fetch_page", url=good.url("/go"))
        assert code == "NETWORK_DENIED"
        assert other.requests == []


def test_non_html_and_bad_urls_are_refused(pack_runner: Callable[..., PackRunner]) -> None:
    with LocalServer() as srv:
        srv.reply("/img", b"\x89PNG....", headers=[("Content-Type", "image/png")])
        web = _granted(pack_runner, srv.url("/").rstrip("/"))
        code, message = web.error("fetch_page", url=srv.url("/img"))
        assert code == "SKILL_ERROR" and "'image/png', not a web page" in message
        _, message = web.error("fetch_page", url="file:///etc/passwd")
        assert "not an http(s) URL" in message
