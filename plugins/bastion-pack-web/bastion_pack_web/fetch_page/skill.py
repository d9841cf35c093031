"""Fetch a web page through Bastion's mediated HTTP and return its readable text and links."""

import re
from html.parser import HTMLParser
from typing import TypedDict
from urllib.parse import urldefrag, urljoin, urlsplit

from bastion_sdk import http

MAX_CHARS = 200_000
MAX_LINKS = 500
MAX_BODY_BYTES = 2_000_000
_SKIP = frozenset({"script", "style", "noscript", "template", "svg", "iframe", "object"})
_BLOCK = frozenset(
    {
        "p",
        "div",
        "br",
        "hr",
        "li",
        "ul",
        "ol",
        "tr",
        "table",
        "section",
        "article",
        "header",
        "footer",
        "nav",
        "aside",
        "main",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "pre",
        "blockquote",
        "dt",
        "dd",
        "figure",
        "figcaption",
        "form",
        "title",
    }
)
_VOID = frozenset(
    {
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "source",
        "track",
        "wbr",
    }
)
_SPACE = re.compile(r"\s+")
_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


class _Reader(HTMLParser):
    """Collects visible text (scripts, styles and the head dropped), the title and links."""

    def __init__(self, base: str, max_links: int) -> None:
        super().__init__(convert_charrefs=True)
        self.base = base
        self.max_links = max_links
        self.title_parts: list[str] = []
        self.parts: list[str] = []
        self.links: list[str] = []
        self.seen: set[str] = set()
        self.skip_depth = 0
        self.in_title = False
        self.pre_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
        elif tag == "base":
            href = dict(attrs).get("href")
            if href:
                self.base = urljoin(self.base, href.strip())
        elif tag in _SKIP and tag not in _VOID:
            self.skip_depth += 1
        elif tag == "pre":
            self.pre_depth += 1
        if tag in _BLOCK:
            self.parts.append("\n")
        if tag == "a" and len(self.links) < self.max_links:
            self._link(dict(attrs).get("href"))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK:
            self.parts.append("\n")
        if tag == "a" and len(self.links) < self.max_links:
            self._link(dict(attrs).get("href"))
        if tag == "base":
            href = dict(attrs).get("href")
            if href:
                self.base = urljoin(self.base, href.strip())

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        elif tag in _SKIP and self.skip_depth:
            self.skip_depth -= 1
        elif tag == "pre" and self.pre_depth:
            self.pre_depth -= 1
        if tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title_parts.append(data)
        elif not self.skip_depth:
            self.parts.append(data if self.pre_depth else _SPACE.sub(" ", data))

    def _link(self, href: str | None) -> None:
        if not href:
            return
        try:
            absolute, _ = urldefrag(urljoin(self.base, href.strip()))
            parts = urlsplit(absolute)
        except ValueError:
            return
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return
        if absolute not in self.seen:
            self.seen.add(absolute)
            self.links.append(absolute)


def _tidy(text: str) -> str:
    """One line per block of text: spaces collapsed, empty lines dropped."""
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def _header(headers: dict[str, str] | list[tuple[str, str]], name: str) -> str:
    items = headers.items() if isinstance(headers, dict) else headers
    for key, value in items:
        if str(key).lower() == name:
            return str(value)
    return ""


def _decode(body: bytes, content_type: str) -> str:
    charset = ""
    m = re.search(r"charset\s*=\s*[\"']?([A-Za-z0-9_.:-]+)", content_type, re.IGNORECASE)
    if m:
        charset = m.group(1)
    else:
        meta = _CHARSET.search(body[:4096])
        if meta:
            charset = meta.group(1).decode("ascii", "replace")
    for candidate in (charset, "utf-8"):
        if not candidate:
            continue
        try:
            return body.decode(candidate, errors="replace")
        except LookupError:
            continue
    return body.decode("utf-8", errors="replace")


class Page(TypedDict):
    url: str
    status: int
    content_type: str
    title: str
    text: str
    links: list[str]
    truncated: bool


def run(url: str, max_chars: int = 20000, max_links: int = 100) -> Page:
    """Fetch a web page and return its title, readable text and links.

    Scripts, styles and other invisible parts are dropped; links are absolute, without
    fragments, deduplicated and at most max_links. Plain-text pages are returned as they are.
    Only hosts the operator granted to this skill can be fetched.

    Args:
        url: The page's address, starting with http:// or https://.
        max_chars: The most characters of text to return (100 to 200000).
        max_links: The most links to return (0 to 500).
    """
    if not 100 <= max_chars <= MAX_CHARS:
        raise ValueError(f"max_chars must be between 100 and {MAX_CHARS}, got {max_chars}")
    if not 0 <= max_links <= MAX_LINKS:
        raise ValueError(f"max_links must be between 0 and {MAX_LINKS}, got {max_links}")
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        raise ValueError(f"{url[:200]!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"{url[:200]!r} is not an http(s) URL; write it in full, e.g. 'https://example.org/'"
        )
    # http errors (NetworkDenied, timeouts, too large) propagate: the host reports each with
    # its own stable code (NETWORK_DENIED, TIMEOUT, ...).
    response = http.get(url.strip(), headers={"Accept": "text/html, text/plain;q=0.9, */*;q=0.1"})
    body = bytes(response.body[:MAX_BODY_BYTES])
    content_type = _header(response.headers, "content-type")
    mime = content_type.split(";")[0].strip().lower()
    final_url = response.url or url
    if mime and not (mime.startswith("text/") or mime in ("application/xhtml+xml",)):
        raise ValueError(
            f"{final_url[:200]!r} is {mime!r}, not a web page; fetch_page reads HTML and text only"
        )
    decoded = _decode(body, content_type)
    if mime in ("", "text/html", "application/xhtml+xml") and (mime or "<" in decoded[:1024]):
        reader = _Reader(final_url, max_links)
        reader.feed(decoded)
        reader.close()
        title = _tidy("".join(reader.title_parts))
        text = _tidy("".join(reader.parts))
        links = reader.links
    else:
        title, text, links = "", decoded.strip(), []
    truncated = len(text) > max_chars
    return {
        "url": final_url,
        "status": int(response.status),
        "content_type": mime,
        "title": title,
        "text": text[:max_chars],
        "links": links,
        "truncated": truncated,
    }
