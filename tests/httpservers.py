"""Real HTTP servers on 127.0.0.1 for tests, with scripted routes, and a test resolver.

    with LocalServer() as srv:
        srv.reply("/hello", body=b"hi")
        srv.redirect("/old", "/hello")
        srv.echo("/echo")                       # JSON of method, path, headers, body
        srv.stream("/big", chunks=..., content_length=None)
        srv.url("/hello")                       # "http://127.0.0.1:PORT/hello"

Every request is recorded in ``srv.requests`` (method, path, headers, body, bytes sent, done).
Streamed replies wait with ``srv.pause(seconds)``, which returns early when the server stops,
so slow routes never outlive a test. ``StaticResolver`` maps test names to chosen addresses.
"""

from __future__ import annotations

import ipaddress
import json
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

__all__ = ["LocalServer", "RecordedRequest", "Reply", "StaticResolver", "self_signed"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass
class Reply:
    """What a route answers: ``body`` bytes, or ``chunks`` streamed (chunked unless a length)."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    chunks: Iterable[bytes] | None = None
    content_length: int | None = None
    """With ``chunks``: send this Content-Length and the raw bytes instead of chunked encoding."""


@dataclass
class RecordedRequest:
    """One request as the server saw it, and how much of the reply got out."""

    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    bytes_sent: int = 0
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


Handler = Callable[[RecordedRequest], Reply]


class LocalServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 (port 0, read back) with scripted routes."""

    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Handler] = {}
        self.scheme = "https" if tls else "http"
        self.sni: list[str | None] = []
        self.requests: list[RecordedRequest] = []
        self._stop = threading.Event()
        self._httpd = ThreadingHTTPServer((host, 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self.host = host
        self.port: int = self._httpd.server_address[1]
        if tls is not None:
            tls.sni_callback = self._record_sni
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # -- lifecycle

    def __enter__(self) -> LocalServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def _record_sni(self, _sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        self.sni.append(name)

    def url(self, path: str = "/", host: str | None = None) -> str:
        """This server's URL for ``path``, optionally under another host name (same port)."""
        return f"{self.scheme}://{host or self.host}:{self.port}{path}"

    def pause(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if the server is stopping (the caller should end)."""
        return self._stop.wait(seconds)

    # -- routes

    def route(self, path: str, handler: Handler) -> None:
        self.routes[path] = handler

    def reply(
        self,
        path: str,
        body: bytes = b"",
        status: int = 200,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        hs = list(headers)
        self.route(path, lambda _r: Reply(status, hs, body))

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        self.route(path, lambda _r: Reply(status, [("Location", location)]))

    def echo(self, path: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        """Answer with JSON: method, path, headers (in order) and the body as text."""
        hs = [("Content-Type", "application/json"), *headers]

        def handle(r: RecordedRequest) -> Reply:
            doc = {
                "method": r.method,
                "path": r.path,
                "headers": r.headers,
                "body": r.body.decode("latin-1"),
            }
            return Reply(200, hs, json.dumps(doc).encode())

        self.route(path, handle)

    def stream(
        self,
        path: str,
        chunks: Callable[[], Iterable[bytes]],
        status: int = 200,
        content_length: int | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Stream ``chunks()`` (a fresh iterable per request), chunked or with a length."""
        hs = list(headers)
        self.route(
            path, lambda _r: Reply(status, hs, chunks=chunks(), content_length=content_length)
        )

    def slow_chunks(self, chunk: bytes, every_s: float, count: int) -> Iterator[bytes]:
        """``count`` chunks, one every ``every_s`` seconds, ending early if the server stops."""
        for _ in range(count):
            if self.pause(every_s):
                return
            yield chunk

    # -- machinery

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # silence stderr
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                rec = RecordedRequest(self.command, self.path, list(self.headers.items()), body)
                server.requests.append(rec)
                try:
                    handler = server.routes.get(self.path.split("?")[0])
                    reply = handler(rec) if handler else Reply(404, [], b"no such route")
                    self._send(rec, reply)
                except OSError as exc:
                    rec.error = type(exc).__name__
                    self.close_connection = True
                finally:
                    rec.done.set()

            def _send(self, rec: RecordedRequest, reply: Reply) -> None:
                self.send_response(reply.status)
                for k, v in reply.headers:
                    self.send_header(k, v)
                if reply.chunks is None:
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(reply.body)
                        rec.bytes_sent = len(reply.body)
                    return
                chunked = reply.content_length is None
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                else:
                    self.send_header("Content-Length", str(reply.content_length))
                self.end_headers()
                self.wfile.flush()
                for data in reply.chunks:
                    if not data:
                        continue
                    if chunked:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    else:
                        self.wfile.write(data)
                    self.wfile.flush()
                    rec.bytes_sent += len(data)
                if chunked:
                    self.wfile.write(b"0\r\n\r\n")
                self.close_connection = True

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _any

        return _H


class StaticResolver:
    """A resolver for tests: names map to chosen addresses; other names fail like NXDOMAIN."""

    def __init__(self, table: Mapping[str, Iterable[str]]) -> None:
        self.table = {k: [ipaddress.ip_address(a) for a in v] for k, v in table.items()}
        self.calls: list[tuple[str, int]] = []

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        self.calls.append((host, port))
        if host not in self.table:
            raise OSError(f"test resolver: no such name {host!r}")
        return list(self.table[host])


def self_signed(folder: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A certificate for ``name`` made with the openssl CLI: (server context, client context)."""
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName=DNS:{name}",
        ],
        check=True,
        capture_output=True,
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client
