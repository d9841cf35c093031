"""Network rules (``scheme://host[:port]``) and the one URL matcher used everywhere.

Policies, manifests, grants and the sandbox's HTTP host function all decide with this
module, so a URL is judged the same way wherever it is checked.

Grammar of a rule::

    rule   = scheme "://" host [ ":" port ] [ "/" ]
    scheme = "http" | "https"                      (any case; stored lowercase)
    host   = name | "*." name | ipv4 | "[" ipv6 "]"
    port   = 1..65535                              (default: http 80, https 443)

* ``name`` is a DNS name, any case, Unicode or punycode, one trailing dot allowed; it is stored
  lowercase in its IDNA (punycode) ASCII form without the trailing dot.
* ``*.name`` matches every subdomain of ``name`` at any depth and never ``name`` itself.
  ``*`` is allowed nowhere else ("*", "*foo.com", "a.*.com" are errors).
* ``ipv4`` must be the canonical dotted quad ("127.0.0.1", not "0177.0.0.1" or "127.1");
  ``ipv6`` is written in brackets and stored compressed without them.
* A lone trailing "/" is tolerated (people paste URLs); any other path, a query, a fragment or
  userinfo is an error, since a rule grants a whole origin.

URLs (``parse_url``) are normalised the same way. Numeric IPv4 spellings that a resolver or
libc would accept (``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``127.1``) are *interpreted* as
the address they denote, following the WHATWG URL standard's IPv4 parser, so that they can
never be taken for a DNS name; a host whose last label is numeric but which is not a valid
IPv4 number is refused. Userinfo, backslashes, whitespace, control characters, percent signs
in the host, empty hosts, bad ports and non-http(s) schemes are refused.
"""

from __future__ import annotations

import ipaddress
import re
import string
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote

import idna

from .errors import RuleError

__all__ = [
    "DEFAULT_PORTS",
    "IPAddress",
    "NetRule",
    "ParsedURL",
    "first_match",
    "parse_url",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORTS: Final[dict[str, int]] = {"http": 80, "https": 443}
"""Schemes the grammar knows, with their default ports."""

_MAX_URL: Final = 65_536
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")
_ASCII_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_\-]{0,61}[a-z0-9_])?")
_HEX = re.compile(r"0[xX][0-9a-fA-F]*")
_FIX_RULE = 'write it as "scheme://host[:port]", e.g. "https://api.example.com"'


def _rule_error(text: str, problem: str, fix: str = _FIX_RULE) -> RuleError:
    return RuleError(f"network rule {text!r}: {problem}", fix=fix)


def _url_error(url: str, problem: str) -> RuleError:
    shown = url if len(url) <= 200 else url[:200] + "..."
    return RuleError(
        f"URL {shown!r}: {problem}",
        fix='use an absolute "http://" or "https://" URL with a plain host name or IP address',
    )


# -- hosts ---------------------------------------------------------------------------------


class _HostError(ValueError):
    """Internal: a host does not normalise; the message says why."""


def _ends_in_number(labels: list[str]) -> bool:
    last = labels[-1]
    return last.isascii() and (last.isdigit() or _HEX.fullmatch(last) is not None)


def _ipv4_part(part: str) -> int:
    if part == "":
        raise _HostError("an empty part in a numeric IPv4 address")
    if part[:2] in ("0x", "0X"):
        digits, base = part[2:], 16  # a bare "0x" is 0 to WHATWG but junk to libc: refused
    elif len(part) > 1 and part[0] == "0":
        digits, base = part[1:], 8
    else:
        digits, base = part, 10
    allowed = {8: string.octdigits, 10: string.digits, 16: string.hexdigits}[base]
    if not 0 < len(digits) <= 32 or any(c not in allowed for c in digits):
        raise _HostError(f"{part!r} is not a number in an IPv4 address")
    return int(digits, base)


def _parse_ipv4_number(labels: list[str]) -> ipaddress.IPv4Address:
    """WHATWG IPv4 parsing (as inet_aton): 1-4 parts, decimal, octal (0..) or hex (0x..)."""
    if len(labels) > 4:
        raise _HostError("more than four parts in a numeric IPv4 address")
    nums = [_ipv4_part(p) for p in labels]
    if any(n > 255 for n in nums[:-1]) or nums[-1] >= 256 ** (5 - len(nums)):
        raise _HostError("a part of the IPv4 address is out of range")
    value = nums[-1]
    for i, n in enumerate(nums[:-1]):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _dns_label(label: str) -> str:
    if label.isascii():
        if not _ASCII_LABEL.fullmatch(label):
            raise _HostError(f"{label!r} is not a valid DNS label")
        if label.startswith("xn--"):
            try:
                if idna.alabel(idna.ulabel(label)).decode("ascii") != label:
                    raise _HostError(f"{label!r} is not a canonical punycode label")
            except idna.IDNAError:
                raise _HostError(f"{label!r} is not a valid punycode label") from None
        return label
    try:
        return idna.alabel(label).decode("ascii")
    except idna.IDNAError as exc:
        raise _HostError(f"{label!r} is not a valid international label ({exc})") from None


def _normalize_host(host: str) -> tuple[str, IPAddress | None, bool]:
    """Normalise a host: returns (canonical host, IP or None, was it written canonically)."""
    if host.startswith("["):
        if not host.endswith("]") or "%" in host:
            raise _HostError("an IPv6 address must be [addr] without a zone id")
        try:
            ip6 = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise _HostError(f"{host!r} is not an IPv6 address") from None
        return ip6.compressed, ip6, host[1:-1] == ip6.compressed
    if "%" in host:
        raise _HostError("percent-escapes are not allowed in a host")
    if ":" in host:
        raise _HostError("an IPv6 address must be written in brackets")
    mapped = host.lower()
    if not host.isascii():
        try:
            mapped = idna.uts46_remap(host, std3_rules=False, transitional=False)
        except idna.IDNAError as exc:
            raise _HostError(f"not a valid international name ({exc})") from None
    if mapped.endswith("."):
        mapped = mapped[:-1]
    labels = mapped.split(".")
    if mapped == "" or "" in labels:
        raise _HostError("the host is empty or has an empty label")
    if _ends_in_number(labels):
        ip4 = _parse_ipv4_number(labels)
        return str(ip4), ip4, host == str(ip4)
    name = ".".join(_dns_label(label) for label in labels)
    if len(name) > 253:
        raise _HostError("the host name is longer than 253 characters")
    return name, None, host == name


def _parse_port(text: str) -> int:
    if not (text.isascii() and text.isdigit() and 1 <= len(text) <= 5):
        raise _HostError(f"port {text!r} is not a number from 1 to 65535")
    port = int(text)
    if not 1 <= port <= 65535:
        raise _HostError(f"port {text!r} is not a number from 1 to 65535")
    return port


def _split_authority(authority: str) -> tuple[str, str | None]:
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise _HostError("an IPv6 address is missing its closing ']'")
        rest = authority[end + 1 :]
        if rest and not rest.startswith(":"):
            raise _HostError("unexpected text after the IPv6 address")
        return authority[: end + 1], rest[1:] if rest else None
    host, sep, port = authority.partition(":")
    if ":" in port:
        raise _HostError("an IPv6 address must be written in brackets")
    return host, port if sep else None


def _bad_char(text: str) -> str | None:
    for ch in text:
        if ch == "\\":
            return "a backslash"
        if unicodedata.category(ch)[0] in "CZ":
            return f"the character U+{ord(ch):04X} (whitespace or control)"
    return None


def _authority(scheme: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if DEFAULT_PORTS[scheme] == port else f"{shown}:{port}"


# -- URLs ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParsedURL:
    """An absolute http(s) URL, strictly parsed and normalised the way rules are."""

    scheme: str
    host: str
    """Lowercase IDNA ASCII name without trailing dot, or canonical IP (IPv6 without brackets)."""
    port: int
    ip: IPAddress | None
    path_and_query: str
    """Starts with "/"; non-ASCII characters percent-encoded; the fragment is dropped."""

    @property
    def authority(self) -> str:
        """``host[:port]`` as sent in the Host header (port omitted when default)."""
        return _authority(self.scheme, self.host, self.port)

    @property
    def origin(self) -> tuple[str, str, int]:
        """``(scheme, host, port)``: what credentials are bound to."""
        return (self.scheme, self.host, self.port)

    @property
    def url(self) -> str:
        """The canonical URL string."""
        return f"{self.scheme}://{self.authority}{self.path_and_query}"

    def __str__(self) -> str:
        return self.url


def parse_url(url: str) -> ParsedURL:
    """Parse an absolute http(s) URL strictly; raises ``RuleError`` for anything doubtful."""
    if not isinstance(url, str):
        raise _url_error(repr(url), "is not a string")
    if len(url) > _MAX_URL:
        raise _url_error(url, f"is longer than {_MAX_URL} characters")
    bad = _bad_char(url)
    if bad:
        raise _url_error(url, f"contains {bad}")
    m = _SCHEME.match(url)
    if not m:
        raise _url_error(url, 'is not absolute ("scheme://host/...")')
    scheme = m.group(1).lower()
    if scheme not in DEFAULT_PORTS:
        raise _url_error(url, f"scheme {scheme!r} is not allowed (only http and https)")
    rest = url[m.end() :]
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    if "@" in authority:
        raise _url_error(url, "contains userinfo ('user@host'), which is not allowed")
    try:
        host_text, port_text = _split_authority(authority)
        if host_text == "":
            raise _HostError("the host is empty")
        host, ip, _ = _normalize_host(host_text)
        port = DEFAULT_PORTS[scheme] if port_text is None else _parse_port(port_text)
    except _HostError as exc:
        raise _url_error(url, str(exc)) from None
    tail = tail.partition("#")[0]
    if not tail.startswith("/"):
        tail = "/" + tail
    if not tail.isascii():
        tail = "".join(c if c.isascii() else quote(c, safe="") for c in tail)
    return ParsedURL(scheme, host, port, ip, tail)


# -- rules ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NetRule:
    """One allowed origin pattern; equality ignores how it was written (``text``)."""

    scheme: str
    host: str
    """Normalised host; for a wildcard, the domain only ("example.com" for "*.example.com")."""
    port: int
    wildcard: bool
    text: str = field(default="", compare=False)

    @classmethod
    def parse(cls, text: str) -> NetRule:
        """Parse a rule; raises ``RuleError`` quoting the text and saying the fix."""
        if not isinstance(text, str):
            raise _rule_error(repr(text), "is not a string")
        bad = _bad_char(text)
        if bad:
            raise _rule_error(text, f"contains {bad}")
        m = _SCHEME.match(text)
        if not m:
            raise _rule_error(text, 'has no scheme ("http://" or "https://")')
        scheme = m.group(1).lower()
        if scheme not in DEFAULT_PORTS:
            raise _rule_error(text, f"scheme {scheme!r} is not allowed (only http and https)")
        rest = text[m.end() :]
        if rest.endswith("/"):
            rest = rest[:-1]
        for ch, what in (("/", "a path"), ("?", "a query"), ("#", "a fragment")):
            if ch in rest:
                raise _rule_error(
                    text,
                    f"has {what}; rules grant a whole origin",
                    fix=f'drop everything after the host and port, e.g. "{scheme}://host"',
                )
        if "@" in rest:
            raise _rule_error(text, "has userinfo ('user@host'), which rules cannot carry")
        try:
            host_text, port_text = _split_authority(rest)
            port = DEFAULT_PORTS[scheme] if port_text is None else _parse_port(port_text)
        except _HostError as exc:
            raise _rule_error(text, str(exc)) from None
        wildcard = host_text.startswith("*.")
        if wildcard:
            host_text = host_text[2:]
        if "*" in host_text:
            raise _rule_error(
                text,
                "'*' is allowed only as the whole leftmost label",
                fix='write "*.example.com" to match every subdomain of example.com',
            )
        if host_text == "":
            raise _rule_error(text, "has an empty host")
        try:
            host, ip, canonical = _normalize_host(host_text)
        except _HostError as exc:
            raise _rule_error(text, str(exc)) from None
        if ip is not None and wildcard:
            raise _rule_error(text, "a wildcard needs a domain name, not an IP address")
        if ip is not None and not canonical:
            shown = f"[{host}]" if ip.version == 6 else host
            raise _rule_error(
                text,
                "the IP address is not written in its canonical form",
                fix=f'write it as "{scheme}://{shown}' + (f':{port_text}"' if port_text else '"'),
            )
        return cls(scheme, host, port, wildcard, text)

    @property
    def ip(self) -> IPAddress | None:
        """The host as an IP address, if the rule names one."""
        if self.wildcard:
            return None
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None

    def matches(self, url: str | ParsedURL) -> bool:
        """Whether the URL's scheme, host and port fall under this rule (junk raises)."""
        u = parse_url(url) if isinstance(url, str) else url
        if u.scheme != self.scheme or u.port != self.port:
            return False
        if self.wildcard:
            return u.ip is None and u.host.endswith("." + self.host)
        return u.host == self.host

    def covers(self, other: NetRule) -> bool:
        """Whether every URL ``other`` matches is matched by this rule too."""
        if (other.scheme, other.port) != (self.scheme, self.port):
            return False
        if not self.wildcard:
            return not other.wildcard and other.host == self.host
        if other.wildcard and other.host == self.host:
            return True
        return other.ip is None and other.host.endswith("." + self.host)

    def __str__(self) -> str:
        host = "*." + self.host if self.wildcard else self.host
        return f"{self.scheme}://{_authority(self.scheme, host, self.port)}"


def first_match(rules: Iterable[NetRule], url: str | ParsedURL) -> NetRule | None:
    """The first rule matching the URL, or None; the URL is parsed once (junk raises)."""
    u = parse_url(url) if isinstance(url, str) else url
    return next((r for r in rules if r.matches(u)), None)
