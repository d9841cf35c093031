"""The mediated HTTP client behind the ``http`` host function given to sandboxed skills.

Every request is checked before a byte leaves the host, and again on every redirect hop:

1. the URL must match a granted rule (``bastion.netrule.first_match``);
2. the host name is resolved once (IP literals are not) and *every* resolved address must pass
   ``bastion.sandbox.netguard.allowed``; a name with any special address is refused outright,
   even if it also has public ones, since a mixed answer is how DNS-rebinding attacks start;
3. the connection goes to one of those checked addresses: a pinned httpcore network backend
   connects to them and nothing else, while the URL keeps the name, so the Host header, TLS SNI
   and certificate verification all use the name (DNS rebinding cannot swap the address);
4. redirects are followed here, one hop at a time (httpx never follows them);
5. every socket operation is bounded by the time left, and the body is streamed and capped.

Skill headers: ``Host``, ``Content-Length``, ``Expect``, ``Proxy-Authorization`` and hop-by-hop
headers (``Connection``, ``Keep-Alive``, ``TE``, ...) are ignored, since the host owns framing.
Bodies are not decompressed: ``Accept-Encoding: identity`` is sent unless the skill asks for an
encoding itself, and then it gets the raw bytes. Cookies are never stored between requests.

The transport seam: a client given ``stub`` fixtures (``bastion.httpfixtures``; the conformance
kit sets them in ``Capabilities.http_stub`` unless ``--live``) never resolves a name or opens a
socket. Steps 2, 3 and 5 are replaced by the recording stub: the rule check and redirect handling
stay, each request is recorded in its audit event (method, URL, headers with credential and
secret values redacted, body size, whether a fixture answered) and answered from the fixtures,
or refused as ``no fixture for GET https://...``. The fixtures are data in the request, so the
stub works the same in a worker process as in the kernel.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
import ssl
import threading
import time
import typing
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, Final, Protocol
from urllib.parse import urljoin

import httpcore
import httpx

from bastion.closing import Closeable
from bastion.errors import ErrorCode, ExecutionError, RuleError
from bastion.executor import AuditSink, IPNetwork
from bastion.httpfixtures import HttpFixtures
from bastion.logs import get_logger
from bastion.netrule import IPAddress, NetRule, ParsedURL, first_match, parse_url
from bastion.sanitize import SanitizeConfig, Sanitizer

from .netguard import allowed, is_special, special_target

__all__ = [
    "ALLOWED_METHODS",
    "HostHttp",
    "HttpResponse",
    "Resolver",
    "SystemResolver",
    "default_tls_context",
]

MiB: Final = 1024 * 1024
ALLOWED_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_IGNORED: Final = frozenset(
    {
        "host",
        "content-length",
        "expect",
        "proxy-authorization",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_CREDENTIALS: Final = frozenset({"authorization", "cookie", "proxy-authorization"})
_BODY_HEADERS: Final = frozenset(
    {
        "content-type",
        "content-encoding",
        "content-language",
        "content-location",
    }
)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class Resolver(Protocol):
    """Turns a host name into addresses; raises (any exception) when it cannot."""

    def resolve(self, host: str, port: int) -> list[IPAddress]: ...


class SystemResolver:
    """The operating system's resolver (``getaddrinfo``), IPv4 and IPv6, in its order."""

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        """All distinct addresses of ``host``; raises ``OSError`` when there are none."""
        found: list[IPAddress] = []
        for family, _, _, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
            if family in (socket.AF_INET, socket.AF_INET6):
                ip = ipaddress.ip_address(str(sockaddr[0]))
                if ip not in found:
                    found.append(ip)
        if not found:
            raise OSError(f"no addresses for {host!r}")
        return found


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """What the skill gets back: status, headers in order, the (capped) raw body, final URL."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    url: str


# -- pinned, deadline-bounded connections ----------------------------------------------------


class _Pin(typing.NamedTuple):
    host: str
    port: int
    addresses: tuple[IPAddress, ...]
    deadline: float


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects only to the addresses checked for the current request, bounded by its deadline."""

    def __init__(self, deadline: float) -> None:
        self._inner = httpcore.SyncBackend()
        self._local = threading.local()
        self._deadline = deadline

    def pin(self, pin: _Pin | None) -> None:
        self._local.pin = pin

    def timeout(self, timeout: float | None, exc: type[Exception]) -> float:
        """``timeout`` bounded by the time left; raises ``exc`` when none is left."""
        pin: _Pin | None = getattr(self._local, "pin", None)
        left = (pin.deadline if pin else self._deadline) - time.monotonic()
        if left <= 0:
            raise exc("deadline exhausted")
        return left if timeout is None else min(timeout, left)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        pin: _Pin | None = getattr(self._local, "pin", None)
        if pin is None or (host, port) != (pin.host, pin.port):
            raise httpcore.ConnectError("refusing to connect to an unchecked address")
        failure: Exception = httpcore.ConnectError("no address to connect to")
        for ip in pin.addresses:
            bounded = self.timeout(timeout, httpcore.ConnectTimeout)
            try:
                stream = self._inner.connect_tcp(
                    str(ip),
                    port,
                    timeout=bounded,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as exc:
                failure = exc
                continue
            return _DeadlineStream(stream, self)
        raise failure

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not reachable from skills")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every read, write and handshake ends by the deadline."""

    def __init__(self, inner: httpcore.NetworkStream, backend: _PinnedBackend) -> None:
        self._inner = inner
        self._backend = backend

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._backend.timeout(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._backend.timeout(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        bounded = self._backend.timeout(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._inner.start_tls(ssl_context, server_hostname, bounded), self._backend
        )

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _RawStream(httpx.SyncByteStream):
    def __init__(self, inner: typing.Iterable[bytes]) -> None:
        self._inner = inner

    def __iter__(self) -> Iterator[bytes]:
        yield from self._inner

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


class _PinnedTransport(httpx.BaseTransport):
    """An httpx transport over an httpcore pool that uses the pinned backend, no keep-alive."""

    def __init__(self, backend: _PinnedBackend, ssl_context: ssl.SSLContext) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=16,
            max_keepalive_connections=0,
            http1=True,
            http2=False,
            retries=0,
            network_backend=backend,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        req = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        resp = self._pool.handle_request(req)
        assert isinstance(resp.stream, typing.Iterable)
        return httpx.Response(
            status_code=resp.status,
            headers=resp.headers,
            stream=_RawStream(resp.stream),
            extensions=resp.extensions,
        )

    def close(self) -> None:
        self._pool.close()


# -- the client ------------------------------------------------------------------------------


_WHY_NOT: Final[str] = (
    "Bastion will not suggest allowing a {reason} address (it reaches the host's own network "
    "or cloud credentials)"
)


def _allow_hint(u: ParsedURL, skill: str, previous: ParsedURL | None) -> str:
    """The policy line that is really missing for ``u``, or why none is suggested.

    A running skill was granted every rule its manifest requested, so ``[network] allow``
    (which only covers requests) cannot help: the missing line is a per-skill grant."""
    reason = special_target(u.host, u.ip)
    if reason is not None:
        return _WHY_NOT.format(reason=reason)
    line = f'add "{u.scheme}://{u.authority}" to [skills.{skill or "NAME"}] network in bastion.toml'
    if previous is not None:
        return (
            f"the server at {previous.scheme}://{previous.authority} redirected there; only if "
            f"that is expected, {line}"
        )
    return f"to allow it, {line} ([network] allow only covers what a manifest requests)"


@functools.cache
def default_tls_context() -> ssl.SSLContext:
    """The system trust store's TLS client context, made once per process: loading the trust
    store takes ~20 ms, which every call of an HTTP skill used to pay. Calls share it safely:
    it holds settings and trust anchors, no per-call or per-skill state (no session is reused
    unless passed explicitly, which Bastion never does)."""
    return ssl.create_default_context()


class HostHttp(Closeable):
    """One skill invocation's HTTP client: rules, address checks, redirects, caps, audit.

    ``secrets`` are the granted secret values: a header carrying one is dropped, like
    ``Authorization`` and ``Cookie``, when a redirect leaves the origin. ``ssl_context`` exists
    for tests and embedders with their own CA; by default the system's trust store is used.
    """

    def __init__(
        self,
        rules: Sequence[NetRule],
        private_allow: Sequence[IPNetwork],
        *,
        deadline: float,
        resolver: Resolver | None = None,
        audit: AuditSink | None = None,
        logger: Any = None,
        max_response_bytes: int = 8 * MiB,
        max_redirects: int = 5,
        max_request_bytes: int = 8 * MiB,
        secrets: Collection[str] = (),
        ssl_context: ssl.SSLContext | None = None,
        skill: str = "",
        stub: HttpFixtures | None = None,
    ) -> None:
        if max_response_bytes < 0 or max_redirects < 0 or max_request_bytes < 0:
            raise ValueError("HostHttp limits must not be negative")
        self.rules = tuple(rules)
        self.private_allow = tuple(private_allow)
        self.deadline = deadline
        self._resolver: Resolver = resolver if resolver is not None else SystemResolver()
        self._audit = audit
        self._log = logger if logger is not None else get_logger("bastion.hostnet")
        self.max_response_bytes = max_response_bytes
        self.max_redirects = max_redirects
        self.max_request_bytes = max_request_bytes
        self._secrets = tuple(s for s in secrets if s)
        self.skill = skill
        # The one redactor (every spelling of every granted secret), for URLs in messages,
        # log lines and audit records, and to spot a header that carries a secret.
        self._redactor = (
            Sanitizer(SanitizeConfig(max_output_bytes=64 * 1024, redact_secrets=self._secrets))
            if self._secrets
            else None
        )
        self._backend = _PinnedBackend(deadline)
        transport = _PinnedTransport(
            self._backend, ssl_context if ssl_context is not None else default_tls_context()
        )
        self._client = httpx.Client(
            transport=transport,
            trust_env=False,
            follow_redirects=False,
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            headers={"User-Agent": "bastion", "Accept-Encoding": "identity"},
        )
        self._closed = False
        self._stub = stub
        self._record: dict[str, object] = {}
        """The stub's record of the request being made (merged into its audit events)."""

    # -- public ---------------------------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
        timeout_ms: int | None = None,
    ) -> HttpResponse:
        """Perform one request for the skill, following granted redirects; see the module doc."""
        started = time.monotonic()
        method = method.upper() if isinstance(method, str) else repr(method)
        if self._closed:
            raise ExecutionError(ErrorCode.SKILL_ERROR, "the HTTP client is closed")
        if method not in ALLOWED_METHODS:
            raise ExecutionError(
                ErrorCode.SKILL_ERROR,
                f"HTTP method {method!r} is not allowed; use one of "
                + ", ".join(sorted(ALLOWED_METHODS)),
            )
        if body is not None and len(body) > self.max_request_bytes:
            raise ExecutionError(
                ErrorCode.SKILL_ERROR,
                f"request body of {len(body)} bytes exceeds the limit of "
                f"{self.max_request_bytes} bytes; send less",
            )
        deadline = self.deadline
        if timeout_ms is not None:
            deadline = min(deadline, started + max(timeout_ms, 0) / 1000)
        hdrs = self._clean_headers(headers)
        if self._stub is not None:
            self._record = self._recorded(hdrs, body)
        try:
            current = parse_url(url)
        except RuleError as exc:
            self._event(method, self._redact(url), started, denied="invalid url")
            raise ExecutionError(
                ErrorCode.NETWORK_DENIED, f"request refused: {exc.message}", detail=str(exc)
            ) from None
        try:
            return self._follow(method, current, hdrs, body, deadline, started)
        finally:
            self._backend.pin(None)

    def _follow(
        self,
        method: str,
        current: ParsedURL,
        hdrs: list[tuple[str, str]],
        body: bytes | None,
        deadline: float,
        started: float,
    ) -> HttpResponse:
        """Send, then follow redirects one checked hop at a time; the body is read at the end."""
        first = current.url
        previous: ParsedURL | None = None
        for hop in range(self.max_redirects + 1):
            sent = time.monotonic()
            response = self._send(method, current, hdrs, body, deadline, previous)
            status, location = response.status_code, response.headers.get("location")
            if status not in _REDIRECTS or location is None:
                return self._finish(method, current, response, sent)
            response.close()
            self._event(method, current.url, sent, status=status, bytes=0)
            if hop == self.max_redirects:
                break
            target = self._redirect_target(method, current, location)
            if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
                method, body = "GET", None
                hdrs = [(k, v) for k, v in hdrs if k.lower() not in _BODY_HEADERS]
            if target.origin != current.origin:
                hdrs = [(k, v) for k, v in hdrs if not self._is_credential(k, v)]
            previous, current = current, target
        self._event(method, current.url, started, denied="too many redirects")
        raise ExecutionError(
            ErrorCode.NETWORK_DENIED,
            f"{self._redact(first)}: more than {self.max_redirects} redirects; "
            "the server may be looping, request the final URL directly",
        )

    def close(self) -> None:
        """Close the underlying connections; further requests fail."""
        if not self._closed:
            self._closed = True
            self._client.close()

    # -- steps ----------------------------------------------------------------------------

    def _clean_headers(self, headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for name, value in headers:
            if not isinstance(name, str) or not _TOKEN.fullmatch(name):
                raise ExecutionError(
                    ErrorCode.SKILL_ERROR,
                    f"header name {name!r} is not a valid HTTP token; use letters, digits, '-'",
                )
            if not isinstance(value, str) or _BAD_VALUE.search(value):
                raise ExecutionError(
                    ErrorCode.SKILL_ERROR,
                    f"header {name!r} has a value with control characters or line breaks; "
                    "remove them",
                )
            if name.lower() in _IGNORED:
                self._log.debug("http header ignored", header=name)
                continue
            out.append((name, value))
        return out

    def _is_credential(self, name: str, value: str) -> bool:
        if name.lower() in _CREDENTIALS:
            return True
        return self._redactor is not None and bool(
            self._redactor.clean_text(value).report.redactions
        )

    def _redact(self, text: str) -> str:
        """``text`` without any spelling of a granted secret."""
        return text if self._redactor is None else self._redactor.clean_text(text).text

    def _redirect_target(self, method: str, current: ParsedURL, location: str) -> ParsedURL:
        try:
            return parse_url(urljoin(current.url, location))
        except RuleError as exc:
            self._event(method, current.url, time.monotonic(), denied="invalid redirect")
            raise ExecutionError(
                ErrorCode.NETWORK_DENIED,
                f"{current.url} redirected to an invalid URL: {exc.message}",
                detail=str(exc),
            ) from None

    def _deny(
        self,
        method: str,
        u: ParsedURL,
        started: float,
        reason: str,
        message: str,
        detail: str | None = None,
    ) -> ExecutionError:
        self._event(method, u.url, started, denied=reason)
        self._log.warning("http request denied", url=self._redact(u.url), reason=reason)
        return ExecutionError(ErrorCode.NETWORK_DENIED, message, detail=detail)

    def _send(
        self,
        method: str,
        u: ParsedURL,
        headers: list[tuple[str, str]],
        body: bytes | None,
        deadline: float,
        previous: ParsedURL | None,
    ) -> httpx.Response:
        started = time.monotonic()
        shown = self._redact(u.url)
        via = f" (redirected from {self._redact(previous.url)})" if previous else ""
        if self._stub is not None:
            self._record = self._recorded(headers, body)
        rule = first_match(self.rules, u)
        if rule is None:
            raise self._deny(
                method,
                u,
                started,
                "not granted",
                f"{shown}{via} is not granted to this skill; "
                + _allow_hint(u, self.skill, previous),
            )
        if self._stub is not None:
            return self._stubbed(self._stub, method, u, started, shown)
        addresses = (u.ip,) if u.ip is not None else self._resolve(method, u, deadline, started)
        for ip in addresses:
            if not allowed(ip, self.private_allow, rule):
                reason = is_special(ip)
                raise self._deny(
                    method,
                    u,
                    started,
                    f"special address: {reason}",
                    f"{shown}{via}: {u.host!r} resolves to a {reason} address, which skills "
                    f"may not reach; {_WHY_NOT.format(reason=reason)}",
                    detail=f"{u.host} -> {ip} ({reason})",
                )
        port = None if u.port == (443 if u.scheme == "https" else 80) else u.port
        target = httpx.URL(
            scheme=u.scheme, host=u.host, port=port, raw_path=u.path_and_query.encode("ascii")
        )
        left = deadline - time.monotonic()
        if left <= 0:
            raise self._fail(method, u, started, ErrorCode.TIMEOUT, "deadline exhausted")
        request = self._client.build_request(
            method,
            target,
            headers=[(k.encode(), v.encode()) for k, v in headers],
            content=body,
            timeout=httpx.Timeout(left),
        )
        self._backend.pin(_Pin(u.host, u.port, tuple(addresses), deadline))  # until the next
        try:
            return self._client.send(request, stream=True)
        except Exception as exc:
            raise self._failure(method, u, started, exc) from None

    def _recorded(self, headers: list[tuple[str, str]], body: bytes | None) -> dict[str, object]:
        """What the stub records of one request besides method and URL."""
        shown = [
            [k, "[REDACTED]" if self._is_credential(k, v) else self._redact(v)] for k, v in headers
        ]
        return {"stub": True, "headers": shown, "request_bytes": len(body or b"")}

    def _stubbed(
        self, stub: HttpFixtures, method: str, u: ParsedURL, started: float, shown: str
    ) -> httpx.Response:
        """The fixture's answer to a granted request, or the clear miss; never a socket."""
        fixture = stub.find(method, u.url)
        if fixture is None:
            self._record["fixture"] = "missing"
            self._event(method, u.url, started, error=ErrorCode.SKILL_ERROR.value)
            raise ExecutionError(
                ErrorCode.SKILL_ERROR,
                f"no fixture for {method} {shown}: the conformance kit answers requests from "
                "fixtures (add a [[response]] with this url to the skill's fixtures/http.toml) "
                "unless `bastion test --live` is given",
            )
        self._record["fixture"] = "answered"
        return httpx.Response(
            fixture.status, headers=list(fixture.headers), stream=httpx.ByteStream(fixture.body)
        )

    def _resolve(
        self, method: str, u: ParsedURL, deadline: float, started: float
    ) -> tuple[IPAddress, ...]:
        box: list[object] = []
        done = threading.Event()

        def work() -> None:
            try:
                box.append(self._resolver.resolve(u.host, u.port))
            except BaseException as exc:  # reported below, in the caller's thread
                box.append(exc)
            finally:
                done.set()

        threading.Thread(target=work, name="bastion-resolve", daemon=True).start()
        if not done.wait(max(0.0, deadline - time.monotonic())):
            raise self._fail(method, u, started, ErrorCode.TIMEOUT, "resolving the host timed out")
        result = box[0]
        if (
            isinstance(result, list)
            and result
            and all(isinstance(a, ipaddress.IPv4Address | ipaddress.IPv6Address) for a in result)
        ):
            return tuple(result)
        raise self._fail(
            method,
            u,
            started,
            ErrorCode.SKILL_ERROR,
            f"could not resolve {u.host!r}",
            detail=repr(result),
        )

    def _finish(
        self, method: str, u: ParsedURL, response: httpx.Response, started: float
    ) -> HttpResponse:
        cap = self.max_response_bytes
        buf = bytearray()
        try:
            length = response.headers.get("content-length", "")
            if length.isdigit() and int(length) > cap:
                raise self._fail(
                    method,
                    u,
                    started,
                    ErrorCode.OUTPUT_LIMIT,
                    f"the response of {length} bytes exceeds the limit of {cap} bytes",
                )
            for chunk in response.iter_raw():
                if len(buf) + len(chunk) > cap:
                    raise self._fail(
                        method,
                        u,
                        started,
                        ErrorCode.OUTPUT_LIMIT,
                        f"the response exceeds the limit of {cap} bytes; reading stopped there",
                        size=len(buf),
                    )
                buf += chunk
        except ExecutionError:
            raise
        except Exception as exc:
            raise self._failure(method, u, started, exc, size=len(buf)) from None
        finally:
            response.close()
        self._event(method, u.url, started, status=response.status_code, bytes=len(buf))
        return HttpResponse(
            status=response.status_code,
            headers=response.headers.multi_items(),
            body=bytes(buf),
            url=u.url,
        )

    # -- errors and audit -----------------------------------------------------------------

    def _failure(
        self, method: str, u: ParsedURL, started: float, exc: Exception, size: int = 0
    ) -> ExecutionError:
        if isinstance(exc, httpcore.TimeoutException | httpx.TimeoutException):
            return self._fail(
                method,
                u,
                started,
                ErrorCode.TIMEOUT,
                "the deadline was reached",
                size=size,
                detail=repr(exc),
            )
        if isinstance(exc, httpcore.ConnectError | httpx.ConnectError):
            tls = isinstance(exc.__context__, ssl.SSLError) or "SSL" in str(exc)
            what = "the TLS handshake failed" if tls else "the connection failed"
            return self._fail(method, u, started, ErrorCode.SKILL_ERROR, what, detail=repr(exc))
        return self._fail(
            method,
            u,
            started,
            ErrorCode.SKILL_ERROR,
            "the HTTP exchange failed",
            size=size,
            detail=repr(exc),
        )

    def _fail(
        self,
        method: str,
        u: ParsedURL,
        started: float,
        code: ErrorCode,
        what: str,
        size: int = 0,
        detail: str | None = None,
    ) -> ExecutionError:
        self._event(method, u.url, started, error=code.value, bytes=size)
        shown = self._redact(f"{u.scheme}://{u.authority}")
        return ExecutionError(code, f"HTTP {method} {shown}: {what}", detail=detail)

    def _event(self, method: str, url: str, started: float, **fields: object) -> None:
        duration_ms = int((time.monotonic() - started) * 1000)
        record: dict[str, object] = {
            "method": method,
            "url": self._redact(url),
            **fields,
            "duration_ms": duration_ms,
        }
        record.setdefault("bytes", 0)
        if self._stub is not None:
            record.update(self._record)
        self._log.debug("http", **record)
        if self._audit is not None:
            self._audit("http", record)
