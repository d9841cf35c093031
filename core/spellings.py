"""Equivalent spellings of a path or URL argument, for guardrail matching.

A guardrail written against ``/files/private/`` must also fire for ``//files/./private/x``,
``/files/tmp/../private/x`` or ``files/private/x``: the sandbox opens the same file for all of
them. ``spellings(value)`` gives the value itself plus its canonical forms:

- **paths** (a value with a ``/`` and no scheme): POSIX ``normpath`` with every run of leading
  slashes collapsed to one (WASI resolution treats ``//x`` as ``/x``; normpath keeps two), ``.``
  and ``x/..`` removed, ``..`` above the root clamped to it, trailing slashes dropped; relative
  paths also resolved against ``/`` (the guest's working directory); each canonical form also
  with a trailing ``/`` (a directory named either way); backslashes also read as ``/``.
- **URLs** (``scheme://...``): the host HTTP layer's own parser (``netrule.parse_url``:
  scheme and host lower case, IDNA, trailing dot and default port dropped, IPv4 in any notation
  made dotted-quad), with the path's dot segments removed, ``//`` collapsed, unreserved
  characters percent-decoded and other escapes upper-cased (RFC 3986 6.2.2); also with every
  escape decoded, and with the host in Unicode (for rules written with an IDN). A URL the
  strict parser refuses (userinfo, odd schemes) is still normalised leniently
  (``urllib.parse``), without its userinfo.

A guardrail matches when any spelling matches, so a rule can only fire more often than before,
never less.
"""

from __future__ import annotations

import posixpath
import re
import urllib.parse
from typing import Final

from .errors import RuleError
from .netrule import parse_url

__all__ = ["canonical_path", "canonical_url_path", "same_spelling", "spellings"]

_SCHEME: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_ESCAPE: Final = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_MAX_LEN: Final = 8192
"""Longer values are matched as written only (normalising them buys nothing but cost)."""


def canonical_path(path: str) -> str:
    """``path`` as WASI resolution sees it: one leading slash, no ``.``/``..``/``//``."""
    if not path:
        return path
    norm = posixpath.normpath(path)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    return norm


def _path_forms(value: str) -> list[str]:
    out: list[str] = []
    for raw in {value, value.replace("\\", "/")}:
        forms = [canonical_path(raw)]
        if not raw.startswith("/"):
            forms.append(canonical_path("/" + raw))
        for form in forms:
            out.append(form)
            if not form.endswith("/"):
                out.append(form + "/")
    return out


def _decode_unreserved(m: re.Match[str]) -> str:
    ch = chr(int(m.group(1), 16))
    return ch if ch in _UNRESERVED else "%" + m.group(1).upper()


def canonical_url_path(path: str) -> str:
    """RFC 3986 normalisation of a URL path: unreserved escapes decoded, others upper-cased,
    dot segments removed, ``//`` collapsed (a trailing ``/`` is kept: it names another URL)."""
    path = _ESCAPE.sub(_decode_unreserved, path)
    trailing = path.endswith("/") or path.endswith("/.") or path.endswith("/..")
    norm = canonical_path(path if path.startswith("/") else "/" + path)
    if trailing and norm != "/":
        norm += "/"
    return norm


def _split_query(path_and_query: str) -> tuple[str, str]:
    path, sep, query = path_and_query.partition("?")
    return path, sep + _ESCAPE.sub(_decode_unreserved, query)


def _url_forms(value: str) -> list[str]:
    try:
        u = parse_url(value)
        scheme, host, authority, tail = u.scheme, u.host, u.authority, u.path_and_query
    except RuleError:
        try:
            parts = urllib.parse.urlsplit(value)
            host = (parts.hostname or "").rstrip(".")
            port = parts.port
        except ValueError:
            return []
        scheme = parts.scheme.lower()
        default = {"http": 80, "https": 443}.get(scheme)
        authority = host if port in (None, default) else f"{host}:{port}"
        tail = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    path, query = _split_query(tail)
    canon = canonical_url_path(path)
    decoded = canonical_url_path(urllib.parse.unquote(path))
    forms = [f"{scheme}://{authority}{canon}{query}", f"{scheme}://{authority}{decoded}{query}"]
    if host.startswith("xn--") or ".xn--" in host:
        try:
            uni = host.encode("ascii").decode("idna")
        except UnicodeError:
            uni = host
        forms.append(f"{scheme}://{authority.replace(host, uni, 1)}{canon}{query}")
    return forms


def spellings(value: str) -> tuple[str, ...]:
    """``value`` and its canonical spellings (see the module docstring), without repeats."""
    if len(value) > _MAX_LEN or "\0" in value:
        return (value,)
    if _SCHEME.match(value):
        forms = _url_forms(value)
    elif "/" in value or "\\" in value:
        forms = _path_forms(value)
    else:
        return (value,)
    return tuple(dict.fromkeys([value, *forms]))


def same_spelling(a: str, b: str) -> bool:
    """Whether two strings name the same path or URL (or are equal)."""
    return a == b or not set(spellings(a)).isdisjoint(spellings(b))
