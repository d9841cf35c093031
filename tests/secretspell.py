"""Spellings of a secret for property tests, and an independent oracle that finds them.

``spelled(secret)`` is a hypothesis strategy of ``(kind, text)``: the secret raw, base64 (standard
or URL-safe, padded or not, at byte offsets 0-2 inside longer data, wrapped at any width), hex
(any case, any separators: spaces, colons, dashes, ``0x``, ``\\x``), percent-encoding of any
subset of characters in any case, JSON-escaped (``\\uXXXX`` for any subset, surrogate pairs,
``\\/``), HTML character references, and percent-encoded base64 (encodings compose).

``leaks(secret, text)`` decodes ``text`` with the standard library (not the code under test)
and says whether the secret can still be read from it.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import re
import urllib.parse
import warnings
from typing import Any

from hypothesis import strategies as st

__all__ = ["SECRETS", "around", "leaks", "spelled"]

SECRETS: dict[str, str] = {
    "DEMO_TOKEN": "tok-7d1e9c0a5b-4f2a",
    "DB_PASSWORD": "pä$$wörd/with+plus=",
    "PASSPHRASE": "correct horse battery staple",
    "EMOJI_KEY": "\U0001f511emoji-key-0001",
}
"""Granted secrets used by the sink tests (names are environment variables)."""

_AROUND = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;!?()[]{}<>=+-_'\"",
    max_size=16,
)
around = _AROUND


def _case(draw: Any, text: str) -> str:
    mode = draw(st.sampled_from(["lower", "upper", "mixed"]))
    if mode == "lower":
        return text.lower()
    if mode == "upper":
        return text.upper()
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if f else c.lower() for c, f in zip(text, flips, strict=True))


def _wrap(draw: Any, text: str) -> str:
    width = draw(st.one_of(st.none(), st.integers(1, 76)))
    if width is None:
        return text
    sep = draw(st.sampled_from(["\n", "\r\n", " ", "\t"]))
    return sep.join(text[i : i + width] for i in range(0, len(text), width))


def _base64(draw: Any, raw: bytes) -> str:
    before = draw(st.binary(max_size=2))
    after = draw(st.binary(max_size=3))
    urlsafe = draw(st.booleans())
    enc = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(before + raw + after)
    text = enc.decode("ascii")
    if not draw(st.booleans()):
        text = text.rstrip("=")
    return _wrap(draw, text)


def _hex(draw: Any, raw: bytes) -> str:
    style = draw(st.sampled_from(["", " ", ":", "-", ", 0x", "\\x", "0x", "\n"]))
    digits = [_case(draw, f"{b:02x}") for b in raw]
    if style == "\\x":
        return "".join("\\x" + d for d in digits)
    if style == ", 0x":
        return "0x" + ", 0x".join(digits)
    if style == "0x":
        return "0x" + "".join(digits)
    return style.join(digits)


def _percent(draw: Any, secret: str) -> str:
    out = []
    for ch in secret:
        if draw(st.booleans()) or ch in "%":
            out.append("".join(_case(draw, f"%{b:02x}") for b in ch.encode("utf-8")))
        else:
            out.append(ch)
    return "".join(out)


def _json(draw: Any, secret: str) -> str:
    out = []
    for ch in secret:
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif ch == "/" and draw(st.booleans()):
            out.append("\\/")
        elif draw(st.booleans()):
            units = ch.encode("utf-16-be")
            for i in range(0, len(units), 2):
                out.append("\\u" + _case(draw, units[i : i + 2].hex()))
        else:
            out.append(ch)
    return "".join(out)


def _html(draw: Any, secret: str) -> str:
    out = []
    for ch in secret:
        form = draw(st.sampled_from(["raw", "dec", "hex"]))
        if form == "dec":
            out.append(f"&#{ord(ch)};")
        elif form == "hex":
            out.append(f"&#x{ord(ch):x};")
        else:
            out.append(ch)
    return "".join(out)


KINDS = ("raw", "base64", "hex", "percent", "json", "html", "percent-base64")


@st.composite
def spelled(draw: Any, secret: str, kind: str | None = None) -> tuple[str, str]:
    """``(kind, text)``: one spelling of ``secret`` (of ``kind``, or any)."""
    kind = kind or draw(st.sampled_from(KINDS))
    raw = secret.encode("utf-8")
    if kind == "raw":
        text = secret
    elif kind == "base64":
        text = _base64(draw, raw)
    elif kind == "hex":
        text = _hex(draw, raw)
    elif kind == "percent":
        text = _percent(draw, secret)
    elif kind == "json":
        text = _json(draw, secret)
    elif kind == "html":
        text = _html(draw, secret)
    else:
        text = urllib.parse.quote(base64.b64encode(draw(st.binary(max_size=2)) + raw).decode())
    return kind, text


_B64_RUN = re.compile(r"[A-Za-z0-9+/\-_]{8,}")
_HEX_RUN = re.compile(r"[0-9a-f]{16,}")


def _views(text: str) -> set[str]:
    views = {text, urllib.parse.unquote(text), urllib.parse.unquote_plus(text), html.unescape(text)}
    with contextlib.suppress(ValueError):
        views.add(json.loads('"' + text + '"'))  # when it is JSON string content
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            esc = text.replace("\\/", "/").encode("latin-1", "backslashreplace")
            decoded = esc.decode("unicode_escape")
            views.add(decoded.encode("utf-16", "surrogatepass").decode("utf-16", "replace"))
        except UnicodeError:
            pass
    return views


def leaks(secret: str, text: str) -> bool:
    """Whether ``secret`` can be read back from ``text`` by a standard decoder."""
    raw = secret.encode("utf-8")
    flat_secret = "".join(secret.split())
    for view in _views(text):
        if secret in view or secret.replace(" ", "+") in view:
            return True
        compact = "".join(view.split())
        if len(flat_secret) >= 8 and flat_secret in compact:
            return True
        for run in _B64_RUN.findall(compact):
            run = run.replace("-", "+").replace("_", "/")
            for off in range(4):
                chunk = run[off:]
                rest = len(chunk) % 4
                chunk = chunk[:-1] if rest == 1 else chunk + "=" * ((4 - rest) % 4)
                try:
                    if raw in base64.b64decode(chunk):
                        return True
                except ValueError:
                    continue
        hexed = re.sub(r"0x|\\x|[\s:,;\-._]", "", view.lower())
        for run in _HEX_RUN.findall(hexed):
            for off in range(2):
                chunk = run[off:]
                chunk = chunk[: len(chunk) // 2 * 2]
                if raw in bytes.fromhex(chunk):
                    return True
    return False
