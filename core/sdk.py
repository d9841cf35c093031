"""The skill SDK's names on the host, for editors and type checkers (``from bastion import sdk``).

The real SDK lives only inside the sandbox (``bastion_sdk``, also importable there as
``bastion.sdk``), where ``http`` goes through the host's mediated HTTP function, ``secret``
returns granted secrets and ``log`` writes to the host's structured log. Here every call raises
``SandboxOnlyError``: a skill must run in the sandbox (``bastion run NAME`` or the conformance
kit, ``bastion test PATH``), never directly on the host.
"""

from __future__ import annotations

import json as _json
from typing import Any, NoReturn

__all__ = [
    "ConfigMissing",
    "Field",
    "File",
    "HttpError",
    "HttpFailed",
    "HttpStatusError",
    "HttpTimeout",
    "Image",
    "NetworkDenied",
    "Response",
    "ResponseTooLarge",
    "SandboxOnlyError",
    "SdkError",
    "SecretNotGranted",
    "config",
    "http",
    "log",
    "secret",
]


class SandboxOnlyError(RuntimeError):
    """An SDK function was called outside the Bastion sandbox."""


def _outside(what: str) -> NoReturn:
    raise SandboxOnlyError(
        f"bastion.sdk.{what} only works inside the Bastion sandbox; run the skill with "
        "`bastion run NAME --input JSON` or the conformance kit (`bastion test PATH`)"
    )


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

    def __init__(self, message: str, response: Response) -> None:
        super().__init__(message)
        self.response = response


class SecretNotGranted(SdkError):
    """The secret is not granted to this skill."""


class Response:
    """An HTTP response: ``status``, ``headers`` (pairs), ``body`` bytes, final ``url``."""

    __slots__ = ("body", "headers", "status", "url")

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes, url: str) -> None:
        self.status = status
        self.headers = list(headers)
        self.body = body
        self.url = url

    @property
    def ok(self) -> bool:
        """True for a 2xx or 3xx status."""
        return 200 <= self.status < 400

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first header called ``name`` (case-insensitive), or ``default``."""
        lname = name.lower()
        return next((v for k, v in self.headers if k.lower() == lname), default)

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (the guest honours the response's charset)."""
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return _json.loads(self.body)

    def raise_for_status(self) -> Response:
        """Raise ``HttpStatusError`` for a 4xx or 5xx status; return the response otherwise."""
        if self.status >= 400:
            raise HttpStatusError(f"HTTP {self.status} from {self.url}", self)
        return self


class _Http:
    """``sdk.http``: requests made by the host on the skill's behalf (sandbox only)."""

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Any = None,
        body: bytes | str | None = None,
        json: Any = None,
        timeout_ms: int | None = None,
    ) -> Response:
        _outside("http.request()")

    def get(self, url: str, **kwargs: Any) -> Response:
        _outside("http.get()")

    def post(self, url: str, **kwargs: Any) -> Response:
        _outside("http.post()")

    def put(self, url: str, **kwargs: Any) -> Response:
        _outside("http.put()")

    def delete(self, url: str, **kwargs: Any) -> Response:
        _outside("http.delete()")


class _Log:
    """``sdk.log``: lines in the host's structured log (sandbox only)."""

    def debug(self, message: str, **fields: Any) -> None:
        _outside("log.debug()")

    def info(self, message: str, **fields: Any) -> None:
        _outside("log.info()")

    def warning(self, message: str, **fields: Any) -> None:
        _outside("log.warning()")

    def error(self, message: str, **fields: Any) -> None:
        _outside("log.error()")


def secret(name: str) -> str:
    """The value of a granted secret (sandbox only)."""
    _outside("secret()")


http = _Http()
log = _Log()


class ConfigMissing(SdkError, KeyError):
    """The setting is not declared in the skill's ``[config]`` (and has no value)."""


def config(key: str, default: Any = None) -> Any:
    """The value of setting ``key`` from ``[config]`` and the policy (sandbox only)."""
    _outside("config()")


class Field:
    """Constraints and a description for ``Annotated[T, Field(...)]`` (read in the sandbox
    when the schema is derived; here it only records its arguments for editors)."""

    def __init__(
        self,
        description: str | None = None,
        *,
        ge: float | None = None,
        le: float | None = None,
        gt: float | None = None,
        lt: float | None = None,
        multiple_of: float | None = None,
        min_length: int | None = None,
        max_length: int | None = None,
        pattern: str | None = None,
        title: str | None = None,
        examples: list[Any] | None = None,
    ) -> None:
        self.description, self.title, self.pattern = description, title, pattern
        self.ge, self.le, self.gt, self.lt, self.multiple_of = ge, le, gt, lt, multiple_of
        self.min_length, self.max_length, self.examples = min_length, max_length, examples


class _Content:
    def __init__(self, data: bytes, mime: str, name: str | None = None) -> None:
        self.data, self.mime, self.name = bytes(data), mime, name


class Image(_Content):
    """An image result ``Image(png_bytes, "image/png")`` (checked by the host)."""

    def __init__(self, data: bytes, mime: str = "image/png") -> None:
        super().__init__(data, mime)


class File(_Content):
    """A file result ``File(data, mime, name)``: text types reach the model as text, PDFs as
    documents."""

    def __init__(self, data: bytes, mime: str, name: str = "file") -> None:
        super().__init__(data, mime, name)
