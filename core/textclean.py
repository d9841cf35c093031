"""One cleaner for every string a pack hands to a terminal or a model.

Pack text (names, descriptions, titles, schema descriptions, examples, messages quoting pack
content) is cleaned once at discovery. Removed: terminal escape sequences (CSI, OSC such as
hyperlinks and window titles, DCS/SOS/PM/APC strings, 7- and 8-bit forms), every character of
the Unicode categories Cc (controls; ``\\n`` and ``\\t`` stay in multi-line fields, ``\\r\\n``
becomes ``\\n``), Cf (format: bidi embeddings, overrides and isolates, zero-width space and
joiners, word joiner, BOM, tag characters, soft hyphen, ...), Co (private use: no agreed meaning,
so nothing a reviewer can read), Cs (lone surrogates) and Cn (unassigned in this Python's Unicode
database), and the invisible default-ignorable characters outside those categories (variation
selectors beyond one after a visible character, combining grapheme joiner, Hangul fillers,
Mongolian free variation selectors). Line and paragraph separators become a newline (or a space
in a single-line field). What was removed is reported, so an operator learns that a pack tried.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["Cleaned", "TextChange", "clean_json_strings", "clean_text", "is_removed"]

_ESCAPES: Final = re.compile(
    "(?:\x1b\\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?"  # CSI ... final byte
    "|(?:\x1b[\\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\\\|\x9c)?"  # OSC/DCS/..
    "|\x1b[\x20-\x2f]*[\x30-\x7e]?"  # other ESC sequences (charset, keypad, RIS ...)
)
"""Terminal escape sequences; an unterminated string sequence runs to the end, as a terminal
would swallow it."""

_IGNORABLE_RANGES: Final = (
    (0x034F, 0x034F),  # COMBINING GRAPHEME JOINER
    (0x115F, 0x1160),  # HANGUL CHOSEONG/JUNGSEONG FILLER
    (0x17B4, 0x17B5),  # KHMER VOWEL INHERENT AQ/AA
    (0x180B, 0x180F),  # MONGOLIAN FREE VARIATION SELECTORS, VOWEL SEPARATOR
    (0x3164, 0x3164),  # HANGUL FILLER
    (0xFFA0, 0xFFA0),  # HALFWIDTH HANGUL FILLER
    (0xFE00, 0xFE0D),  # VARIATION SELECTOR-1..14 (15 and 16 pick text/emoji style)
    (0xE0100, 0xE01EF),  # VARIATION SELECTOR-17..256 (the byte-smuggling range)
)
"""Default-ignorable (invisible) code points outside the C* categories."""
_PRESENTATION: Final = frozenset({"\ufe0e", "\ufe0f"})
"""VS15/VS16: kept once after a visible character (emoji style), removed anywhere else."""
_LINE_SEPARATORS: Final = frozenset({"\u2028", "\u2029", "\x85"})


def _ignorable(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _IGNORABLE_RANGES)


def is_removed(ch: str, *, multiline: bool = True) -> bool:
    """Whether the cleaner drops the single character ``ch`` (outside any escape sequence)."""
    if multiline and ch in "\n\t":
        return False
    if ch in _LINE_SEPARATORS:
        return False  # replaced, not removed
    return unicodedata.category(ch)[0] == "C" or _ignorable(ord(ch))


@dataclass(frozen=True, slots=True)
class TextChange:
    """What cleaning removed from one field of a pack: how many characters, which kinds."""

    field: str
    removed: int
    kinds: tuple[str, ...]
    """Distinct code points removed (``U+202E``) and ``escape sequence``, first eight."""

    def describe(self) -> str:
        more = "" if len(self.kinds) < 8 else ", ..."
        return f"{self.field}: removed {self.removed} ({', '.join(self.kinds)}{more})"

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "removed": self.removed, "kinds": list(self.kinds)}


@dataclass(frozen=True, slots=True)
class Cleaned:
    """A cleaned string, the count of removed characters and which kinds they were."""

    text: str
    removed: int = 0
    kinds: tuple[str, ...] = ()

    def change(self, field: str) -> TextChange | None:
        return TextChange(field, self.removed, self.kinds) if self.removed else None


def _needs_work(text: str) -> bool:
    if text.isascii():
        return not text.isprintable()
    return True


def clean_text(text: str, *, multiline: bool = True) -> Cleaned:
    """``text`` without escape sequences and invisible or control characters.

    ``multiline`` keeps ``\\n`` and ``\\t`` (descriptions); otherwise they become a space.
    """
    if not _needs_work(text):
        return Cleaned(text)
    kinds: dict[str, None] = {}
    removed = 0
    if "\x1b" in text or any("\x90" <= c <= "\x9f" for c in text):

        def drop(m: re.Match[str]) -> str:
            nonlocal removed
            removed += len(m.group())
            kinds.setdefault("escape sequence")
            return ""

        text = _ESCAPES.sub(drop, text)
    text = text.replace("\r\n", "\n")
    out: list[str] = []
    for ch in text:
        if ch in _LINE_SEPARATORS or (not multiline and ch in "\n\t"):
            out.append("\n" if multiline else " ")
            removed += 1
            kinds.setdefault(f"U+{ord(ch):04X}")
            continue
        if ch in _PRESENTATION and out and out[-1] not in _PRESENTATION and out[-1].isprintable():
            out.append(ch)
            continue
        if ch in _PRESENTATION or is_removed(ch, multiline=multiline):
            removed += 1
            if len(kinds) < 9:
                kinds.setdefault(f"U+{ord(ch):04X}")
            continue
        out.append(ch)
    return Cleaned("".join(out), removed, tuple(kinds)[:8])


def clean_json_strings(
    value: Any,
    field: str,
    *,
    keys: Iterable[str] | None = None,
    deep_keys: Iterable[str] = (),
) -> tuple[Any, list[TextChange]]:
    """A copy of JSON ``value`` whose strings are cleaned, with the changes by location.

    Without ``keys`` every string and object key is cleaned. With ``keys``, only string values
    of those object keys (at any depth; ``description``, ``title`` in a schema) and every string
    under ``deep_keys`` (``examples``) are; structural strings (patterns, enums) are left as is.
    """
    wanted = None if keys is None else frozenset(keys)
    deep = frozenset(deep_keys)
    changes: list[TextChange] = []

    def walk(node: Any, where: str, everything: bool) -> Any:
        if isinstance(node, str):
            if not everything:
                return node
            c = clean_text(node)
            if (ch := c.change(where)) is not None:
                changes.append(ch)
            return c.text
        if isinstance(node, dict):
            result: dict[Any, Any] = {}
            for k, v in node.items():
                key = k
                if everything and isinstance(k, str):
                    ck = clean_text(k, multiline=False)
                    if (ch := ck.change(f"{where}.{ck.text} (key)")) is not None:
                        changes.append(ch)
                    key = ck.text
                sub = (
                    everything
                    or k in deep
                    or (wanted is not None and k in wanted and isinstance(v, str))
                )
                result[key] = walk(v, f"{where}.{key}", sub)
            return result
        if isinstance(node, list):
            return [walk(v, f"{where}[{i}]", everything) for i, v in enumerate(node)]
        return node

    return walk(value, field, wanted is None), changes
