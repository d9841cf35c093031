"""The skill SDK inside the sandbox: HTTP through the host, granted secrets, the host log,
settings (``config``), files and images as results, and ``Field`` for schema constraints.

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
    ├── SecretNotGranted       the secret is not granted to this skill
    └── ConfigMissing          the setting is not declared in skill.toml [config]
"""

import binascii as _binascii
import json as _json
import typing as _typing

from componentize_py_types import Err as _Err
from wit_world.imports import host as _host

__all__ = [
    "ConfigMissing",
    "Field",
    "File",
    "HttpError",
    "HttpFailed",
    "HttpStatusError",
    "HttpTimeout",
    "NetworkDenied",
    "Response",
    "ResponseTooLarge",
    "SdkError",
    "SecretNotGranted",
    "Image",
    "config",
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


class ConfigMissing(SdkError, KeyError):
    """The setting is not declared in the skill's ``[config]`` (and has no value)."""

    def __str__(self):
        return str(self.args[0]) if self.args else "config key missing"


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


from bastion_types import Field  # noqa: E402  (one marker class for schemas and the SDK)

_config = {}


def _set_config(values):
    """Set by the runner before each call: the skill's settings (``[config]`` + policy)."""
    global _config
    _config = dict(values) if isinstance(values, dict) else {}


def config(key, default=None):
    """The value of setting ``key`` (declared in skill.toml ``[config]``, set by the operator
    in the policy's ``[skills.NAME.config]``, else its declared default).

    ``default`` is returned for a key that has no value; a key with no value and no default
    raises ``ConfigMissing``.
    """
    key = str(key)
    if key in _config:
        return _config[key]
    if default is not None:
        return default
    raise ConfigMissing(
        f"config key {key!r} has no value: declare it in skill.toml [config] and set it in "
        "the policy's [skills.NAME.config]"
    )


class _Content:
    """Bytes the skill returns for the model to see as an image or a document."""

    __slots__ = ("data", "mime", "name")
    kind = "file"

    def __init__(self, data, mime, name=None):
        if isinstance(data, str):
            data = data.encode("utf-8")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"{type(self).__name__} data must be bytes, not {type(data).__name__}")
        if not isinstance(mime, str) or "/" not in mime:
            raise ValueError(f"{type(self).__name__} needs a MIME type such as 'image/png', "
                             f"not {mime!r}")
        self.data = bytes(data)
        self.mime = mime.strip().lower()
        self.name = None if name is None else str(name)

    def __repr__(self):
        return f"<{type(self).__name__} {self.mime} {len(self.data)} bytes>"

    def __bastion_json__(self):
        out = {
            "$bastion": self.kind,
            "mime": self.mime,
            "data_b64": _binascii.b2a_base64(self.data, newline=False).decode("ascii"),
        }
        if self.name is not None:
            out["name"] = self.name
        return out


class Image(_Content):
    """An image result: ``Image(png_bytes, "image/png")`` (PNG, JPEG, GIF or WebP).

    The host checks the bytes really are that type before the model sees them.
    """

    __slots__ = ()
    kind = "image"

    def __init__(self, data, mime="image/png"):
        super().__init__(data, mime)


class File(_Content):
    """A file result: ``File(data, "application/pdf", "report.pdf")``; text types (CSV, HTML,
    SVG, JSON ...) reach the model as text, PDFs as documents."""

    __slots__ = ()
    kind = "file"

    def __init__(self, data, mime, name="file"):
        super().__init__(data, mime, name)


def _is_content_type(tp):
    """Whether a return annotation is (or is made of) Image/File: no output schema then."""
    if isinstance(tp, type) and issubclass(tp, _Content):
        return True
    return any(_is_content_type(a) for a in _typing.get_args(tp))
