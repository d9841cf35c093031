"""The skill SDK inside the sandbox: HTTP through the host, granted secrets, the host log.

A skill imports it as ``import bastion_sdk`` or ``from bastion import sdk``. The host checks
every request against the skill's grants; this module only shapes calls and results. Granted
mounts need no SDK: they are ordinary directories (``open``, ``pathlib``).

Exceptions::

    SdkError
    ├── HttpError
    │   ├── NetworkDenied      the URL (or an address it resolves to) is not granted
    │   ├── HttpTimeout        the request did not complete in time
    │   ├── ResponseTooLarge   the response exceeded the host's size cap
    │   ├── HttpFailed         connection refused, bad URL, protocol error
    │   └── HttpStatusError    raised by Response.raise_for_status() for 4xx/5xx
    └── SecretNotGranted       the secret is not granted to this skill
"""

import binascii as _binascii
import json as _json

from componentize_py_types import Err as _Err
from wit_world.imports import host as _host

__all__ = [
    "HttpError",
    "HttpFailed",
    "HttpStatusError",
    "HttpTimeout",
    "NetworkDenied",
    "Response",
    "ResponseTooLarge",
    "SdkError",
    "SecretNotGranted",
    "http",
    "log",
    "secret",
]


class SdkError(Exception):
    """Base of the SDK's errors."""


class HttpError(SdkError):
    """An HTTP request made through the host failed."""


class NetworkDenied(HttpError):
    """The URL, or an address it resolves to, is not granted to this skill."""


class HttpTimeout(HttpError):
    """The request did not complete in time."""


class ResponseTooLarge(HttpError):
    """The response exceeded the host's size cap."""


class HttpFailed(HttpError):
    """Any other failure: connection refused, bad URL, protocol error."""


class HttpStatusError(HttpError):
    """The server answered with a 4xx or 5xx status (``Response.raise_for_status``)."""

    def __init__(self, message, response):
        super().__init__(message)
        self.response = response


class SecretNotGranted(SdkError):
    """The secret is not granted to this skill (``[permissions] secrets`` and the policy)."""


_HTTP_ERRORS = {
    "HttpError_Denied": NetworkDenied,
    "HttpError_Timeout": HttpTimeout,
    "HttpError_TooLarge": ResponseTooLarge,
    "HttpError_Failed": HttpFailed,
}


class Response:
    """An HTTP response: ``status``, ``headers`` (list of pairs), ``body`` bytes, final ``url``."""

    __slots__ = ("body", "headers", "status", "url")

    def __init__(self, status, headers, body, url):
        self.status = status
        self.headers = list(headers)
        self.body = body
        self.url = url

    def __repr__(self):
        return f"<Response {self.status} {self.url} ({len(self.body)} bytes)>"

    @property
    def ok(self):
        """True for a 2xx or 3xx status."""
        return 200 <= self.status < 400

    def header(self, name, default=None):
        """The first header called ``name`` (case-insensitive), or ``default``."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return default

    @property
    def encoding(self):
        ctype = self.header("content-type", "")
        for part in ctype.split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset" and value:
                return value.strip("\"'")
        return "utf-8"

    @property
    def text(self):
        """The body decoded with the response's charset (UTF-8 by default)."""
        try:
            return self.body.decode(self.encoding, "replace")
        except LookupError:
            return self.body.decode("utf-8", "replace")

    def json(self):
        """The body parsed as JSON."""
        return _json.loads(self.body)

    def raise_for_status(self):
        """Raise ``HttpStatusError`` for a 4xx or 5xx status; return the response otherwise."""
        if self.status >= 400:
            raise HttpStatusError(f"HTTP {self.status} from {self.url}", self)
        return self


class _Http:
    """``bastion_sdk.http``: requests made by the host on the skill's behalf."""

    def request(self, method, url, *, headers=None, body=None, json=None, timeout_ms=None):
        """Send one request; returns a ``Response`` or raises an ``HttpError``."""
        pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or ())
        if json is not None:
            if body is not None:
                raise TypeError("pass either body= or json=, not both")
            body = _json.dumps(json).encode("utf-8")
            if not any(k.lower() == "content-type" for k, _ in pairs):
                pairs.append(("content-type", "application/json"))
        if isinstance(body, str):
            body = body.encode("utf-8")
        if body is not None and not isinstance(body, (bytes, bytearray)):
            raise TypeError(f"body must be bytes or str, not {type(body).__name__}")
        req = _host.HttpRequest(
            method=str(method).upper(),
            url=str(url),
            headers=[(str(k), str(v)) for k, v in pairs],
            body_b64=(
                _binascii.b2a_base64(bytes(body), newline=False).decode("ascii")
                if body is not None else None
            ),
            timeout_ms=int(timeout_ms) if timeout_ms is not None else None,
        )
        try:
            resp = _host.http(req)
        except _Err as err:
            value = err.value
            cls = _HTTP_ERRORS.get(type(value).__name__, HttpFailed)
            raise cls(getattr(value, "value", str(value))) from None
        return Response(resp.status, resp.headers, _binascii.a2b_base64(resp.body_b64), resp.url)

    def get(self, url, **kwargs):
        """``request("GET", url, ...)``."""
        return self.request("GET", url, **kwargs)

    def post(self, url, **kwargs):
        """``request("POST", url, ...)``."""
        return self.request("POST", url, **kwargs)

    def put(self, url, **kwargs):
        """``request("PUT", url, ...)``."""
        return self.request("PUT", url, **kwargs)

    def delete(self, url, **kwargs):
        """``request("DELETE", url, ...)``."""
        return self.request("DELETE", url, **kwargs)


def secret(name):
    """The value of a granted secret; raises ``SecretNotGranted`` otherwise."""
    value = _host.secret(str(name))
    if value is None:
        raise SecretNotGranted(f"secret {name!r} is not granted to this skill")
    return value


def _fmt(message, fields):
    if not fields:
        return str(message)
    extra = " ".join(f"{k}={v!r}" for k, v in fields.items())
    return f"{message} {extra}"


class _Log:
    """``bastion_sdk.log``: lines in the host's structured log, attributed to the skill."""

    def debug(self, message, **fields):
        _host.log(_host.Level.DEBUG, _fmt(message, fields))

    def info(self, message, **fields):
        _host.log(_host.Level.INFO, _fmt(message, fields))

    def warning(self, message, **fields):
        _host.log(_host.Level.WARNING, _fmt(message, fields))

    def error(self, message, **fields):
        _host.log(_host.Level.ERROR, _fmt(message, fields))


http = _Http()
log = _Log()
