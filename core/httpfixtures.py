"""HTTP fixtures: canned answers the conformance kit's recording stub gives a skill's requests.

``bastion test`` never touches a real host unless ``--live`` is given: every request a skill
makes (any kind: WASI, component, Python; in a worker process or not) is answered by the stub
in ``bastion.sandbox.hostnet`` from these fixtures, and a request without one fails with
``no fixture for GET https://...``. They come from two places:

- ``fixtures/http.toml`` in the skill's folder, then in the pack folder: ``[[response]]``
  entries with ``url`` (exact, query included), ``method`` (default ``GET``), ``status``
  (default 200), ``headers`` (a table) and ``body`` (text) or ``body_file`` (a file beside the
  TOML file, read as bytes);
- the files of the pack folder's ``fixtures/http/`` folder, answered under ``{{fixtures_url}}``
  (``index.html`` also for its folder's URL), as the kit's local server serves them live.

The fixtures are plain data (``to_wire``/``from_wire``), so they cross to a worker in the call.
"""

from __future__ import annotations

import mimetypes
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from .errors import ConfigError, RuleError
from .netrule import parse_url

__all__ = [
    "FIXTURES_TOML",
    "MAX_FIXTURE_BYTES",
    "HttpFixture",
    "HttpFixtures",
    "load_http_fixtures",
]

FIXTURES_TOML: Final[str] = "fixtures/http.toml"
MAX_FIXTURE_BYTES: Final[int] = 2 << 20
"""All bodies of one skill's fixtures together (they travel in each call's header)."""
_MAX_ENTRIES: Final[int] = 500
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class HttpFixture:
    """One canned answer: for ``method`` and the canonical ``url``, this response."""

    method: str
    url: str
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True, slots=True)
class HttpFixtures:
    """A skill's canned answers; with none, every request it makes is a miss."""

    entries: tuple[HttpFixture, ...] = ()

    def find(self, method: str, url: str) -> HttpFixture | None:
        """The fixture for ``method`` and ``url`` (canonical form); ``HEAD`` also matches a
        ``GET`` fixture (without its body)."""
        for e in self.entries:
            if e.url == url and e.method == method:
                return e
        if method == "HEAD":
            for e in self.entries:
                if e.url == url and e.method == "GET":
                    return HttpFixture("HEAD", e.url, e.status, e.headers, b"")
        return None

    def to_wire(self) -> list[list[Any]]:
        """JSON-ready form (bodies as latin-1 text: one character per byte)."""
        return [
            [e.method, e.url, e.status, [list(h) for h in e.headers], e.body.decode("latin-1")]
            for e in self.entries
        ]

    @classmethod
    def from_wire(cls, data: Any) -> HttpFixtures:
        """The inverse of ``to_wire``; raises ``TypeError``/``ValueError`` on a bad shape."""
        entries = []
        for method, url, status, headers, body in data:
            entries.append(
                HttpFixture(
                    str(method),
                    str(url),
                    int(status),
                    tuple((str(k), str(v)) for k, v in headers),
                    str(body).encode("latin-1"),
                )
            )
        return cls(tuple(entries))


def _canonical(url: str, source: str) -> str:
    try:
        return parse_url(url).url
    except RuleError as exc:
        raise ConfigError(
            f"fixture url {url!r} is not a valid http(s) URL: {exc.message}",
            source=source,
            fix='write an absolute URL such as "https://api.example.org/v1/items?q=1"',
        ) from None


def _entry(raw: Any, i: int, base: Path, source: str) -> HttpFixture:
    where = f"[[response]] {i}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table", source=source)
    unknown = sorted(set(raw) - {"url", "method", "status", "headers", "body", "body_file"})
    if unknown:
        raise ConfigError(
            f"{where} has unknown key {unknown[0]!r}",
            source=source,
            fix="use url, method, status, headers and body or body_file",
        )
    url, method, status = raw.get("url"), raw.get("method", "GET"), raw.get("status", 200)
    if not isinstance(url, str):
        raise ConfigError(f'{where} needs url = "https://..."', source=source)
    if not isinstance(method, str) or method.upper() not in _METHODS:
        raise ConfigError(
            f"{where} method {method!r} is not one of {', '.join(sorted(_METHODS))}",
            source=source,
        )
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise ConfigError(f"{where} status {status!r} is not an HTTP status", source=source)
    headers = raw.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ConfigError(f"{where} headers must be a table of strings", source=source)
    if "body" in raw and "body_file" in raw:
        raise ConfigError(f"{where} has both body and body_file; keep one", source=source)
    body = raw.get("body", "")
    if "body_file" in raw:
        rel = raw["body_file"]
        path = (base / str(rel)).resolve()
        if not isinstance(rel, str) or not path.is_relative_to(base.resolve()):
            raise ConfigError(
                f"{where} body_file {rel!r} is not a file beside {FIXTURES_TOML}", source=source
            )
        try:
            with path.open("rb") as f:
                data = f.read(MAX_FIXTURE_BYTES + 1)
        except OSError as exc:
            raise ConfigError(
                f"{where} body_file {rel!r} cannot be read ({exc.strerror})", source=source
            ) from None
    elif isinstance(body, str):
        data = body.encode("utf-8")
    else:
        raise ConfigError(f"{where} body must be a string", source=source)
    return HttpFixture(
        method.upper(),
        _canonical(url, source),
        status,
        tuple((str(k), v) for k, v in headers.items()),
        data,
    )


def _from_toml(path: Path) -> list[HttpFixture]:
    if not path.is_file():
        return []
    from .configfile import read_toml  # pydantic: the kit reads files, a worker never does

    doc = read_toml(path, ConfigError)
    unknown = sorted(set(doc) - {"response"})
    if unknown:
        raise ConfigError(
            f"unknown key {unknown[0]!r}", source=str(path), fix="list [[response]] tables only"
        )
    raw = doc.get("response", [])
    if not isinstance(raw, list):
        raise ConfigError("response must be an array of tables", source=str(path))
    return [_entry(r, i, path.parent, str(path)) for i, r in enumerate(raw, start=1)]


def _from_folder(folder: Path, origin: str) -> list[HttpFixture]:
    """The files of ``folder`` as GET fixtures under ``origin`` (links are not followed)."""
    out: list[HttpFixture] = []
    root = folder.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            rel = path.relative_to(root).as_posix()
            kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
            with path.open("rb") as f:
                data = f.read(MAX_FIXTURE_BYTES + 1)
            headers = (("Content-Type", kind), ("Content-Length", str(len(data))))
            urls = [f"{origin}/{quote(rel)}"]
            if name == "index.html":
                parent = path.parent.relative_to(root).as_posix()
                urls.append(f"{origin}/" + ("" if parent == "." else quote(parent) + "/"))
            for url in urls:
                out.append(HttpFixture("GET", parse_url(url).url, 200, headers, data))
    return out


def load_http_fixtures(
    skill_folder: Path, pack_folder: Path, *, files_origin: str | None = None
) -> HttpFixtures:
    """The skill's fixtures: its own ``fixtures/http.toml``, the pack's, then (with
    ``files_origin``) the pack's ``fixtures/http/`` files; raises ``ConfigError`` naming the
    file and entry when one is malformed or they are too large."""
    entries = _from_toml(skill_folder / FIXTURES_TOML)
    if pack_folder.resolve() != skill_folder.resolve():
        entries += _from_toml(pack_folder / FIXTURES_TOML)
    files = pack_folder / "fixtures" / "http"
    if files_origin is not None and files.is_dir():
        entries += _from_folder(files, files_origin)
    total = sum(len(e.body) for e in entries)
    if total > MAX_FIXTURE_BYTES or len(entries) > _MAX_ENTRIES:
        raise ConfigError(
            f"the HTTP fixtures of {skill_folder.name!r} hold {len(entries)} responses and "
            f"{total} bytes; the limit is {_MAX_ENTRIES} responses and {MAX_FIXTURE_BYTES} bytes",
            source=str(skill_folder),
            fix="keep fixtures to what the examples fetch, trimmed to the parts they read",
        )
    return HttpFixtures(tuple(entries))
