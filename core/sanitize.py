"""The output sanitizer: what a skill returns is made safe to show a model or a person.

One pipeline, in this order (the order matters; see ``Sanitizer``):

1. **Unicode**: lone surrogates become U+FFFD (bytes are decoded as UTF-8 with U+FFFD).
2. **Escapes and invisibles**: ANSI/VT sequences (CSI, OSC/DCS/SOS/PM/APC strings ended by
   BEL or ST, other ESC sequences, their C1 forms) are removed; then C0/C1 control characters
   except ``\\n`` and ``\\t`` (``\\r\\n`` and lone ``\\r`` become ``\\n``), bidi embeddings,
   overrides, isolates and marks (U+202A-202E, U+2066-2069, U+200E/F, U+061C), and invisible
   characters that only hide text: zero-width space U+200B, word joiner and invisible operators
   U+2060-2064, U+FEFF, U+180E and the tag block U+E0000-E007F ("ASCII smuggling"). Zero-width
   (non-)joiners U+200C/U+200D are *kept*: emoji sequences and several scripts need them.
   This runs first so that invisibles cannot split a secret to slip past redaction.
3. **Redaction**, repeated until nothing more matches (so the result is a fixed point):
   granted secret values in raw, base64 (standard and URL-safe, at all three byte alignments,
   so a secret inside longer base64 is caught), hex (lower/upper) and URL-encoded forms,
   also when ASCII whitespace splits them (base64 wrapped at 64/76 columns, spaced hex dumps;
   forms of 8+ characters) -> ``[REDACTED:NAME]``; credential shapes (``sk-``, ``AKIA``/``ASIA``,
   ``ghp_`` and ``github_pat_``, ``xox?-``, Bearer tokens, PEM private key blocks, JWTs);
   host path prefixes -> ``[path]`` wherever they occur; optionally PII (email, phone, card
   numbers passing Luhn, IBANs passing mod-97, IPv4 and IPv6 addresses).
4. **Size cap**: text over ``max_output_bytes`` (UTF-8) is cut and ends with a visible marker
   ``…[truncated N bytes]``; the marker counts against the cap, so the output is never longer
   than the cap and cleaning it again changes nothing (idempotence).

Every regular expression here is linear on adversarial input: patterns start where the previous
character cannot continue the token (a look-behind), so a long run is scanned from one start
only; quantifiers that could overlap are bounded. PEM blocks are found with ``str.find``.

Redaction is a guard against *accidental* leaks (an echoed token, a path in an error). A skill
that holds a secret and wants to leak it can always disguise it; that is what grants are for.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import ipaddress
import json
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from .executor import JSONValue

__all__ = [
    "CleanText",
    "CleanValue",
    "SanitizeConfig",
    "SanitizeReport",
    "Sanitizer",
]

_MAX_PASSES: Final = 6
_MEMO_MAX_LEN: Final = 64
_MEMO_MAX_ENTRIES: Final = 4096
_MIN_CAP: Final = 64
_COMPACT: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
"""Compact JSON for sizes (built once: ``json.dumps`` with options builds one per call)."""

# -- step 2: escapes and invisibles -------------------------------------------------------

_ANSI: Final = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"  # CSI
    # OSC/DCS/SOS/PM/APC strings, only when terminated (else the introducer alone goes and the
    # body stays visible as text); the body excludes every introducer, so scans never overlap.
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c\x90\x98\x9d\x9e\x9f\n]*"
    r"(?:\x07|\x1b\\|\x9c)"
    r"|\x1b[ -/]*[0-~]"  # other ESC sequences
)
_NEWLINES: Final = re.compile("\r\n?|[\u2028\u2029]")
_INVISIBLE: Final = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u180e\u200b\u200e\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u2069\ufeff\U000e0000-\U000e007f]+"
)
_SURROGATE: Final = re.compile("[\ud800-\udfff]")

# -- step 3: credential shapes --------------------------------------------------------------

_TOKEN_CHARS = r"A-Za-z0-9_\-"
# (marker name, substrings one of which must be present, pattern)
_CREDENTIALS: Final[tuple[tuple[str, tuple[str, ...], re.Pattern[str]], ...]] = (
    ("API_KEY", ("sk-",), re.compile(rf"(?<![{_TOKEN_CHARS}])sk-[{_TOKEN_CHARS}]{{20,}}")),
    (
        "AWS_KEY",
        ("AKIA", "ASIA"),
        re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Za-z0-9])"),
    ),
    (
        "GITHUB_TOKEN",
        ("gh", "github_pat_"),
        re.compile(r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
    ),
    ("SLACK_TOKEN", ("xox",), re.compile(r"(?<![A-Za-z0-9-])xox[abposr]-[A-Za-z0-9-]{10,}")),
    (
        "JWT",
        ("eyJ",),
        re.compile(
            rf"(?<![{_TOKEN_CHARS}])eyJ[{_TOKEN_CHARS}]{{8,}}\.eyJ[{_TOKEN_CHARS}]{{8,}}"
            rf"\.[{_TOKEN_CHARS}]*"
        ),
    ),
)
# The token of "Bearer <token>" is replaced, the word kept. Tokens are long: prose is spared.
_BEARER: Final = re.compile(r"(?<![A-Za-z0-9])(Bearer[ \t]+)[A-Za-z0-9._~+/\-]{16,}=*", re.I)
_PEM_BEGIN: Final = re.compile(r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY-----")
_PEM_END: Final = re.compile(r"-----END [A-Z0-9 ]{0,40}PRIVATE KEY-----")

# -- step 3: PII ------------------------------------------------------------------------------

_EMAIL: Final = re.compile(
    r"(?<![\w.+\-])[\w.+\-]{1,64}@[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63}){0,8}"
    r"\.[A-Za-z]{2,24}(?![\w\-])"
)
_PHONE: Final = re.compile(
    r"(?<![\w+.\-])(?:\+\d{1,3}[ .\-]?(?:\(\d{1,4}\)|\d{1,4})(?:[ .\-]?\d{2,4}){2,4}"
    r"|\(\d{3}\)[ .\-]?\d{3}[ .\-]\d{4}|\d{3}[.\-]\d{3}[.\-]\d{4})(?![\w.\-]?\d)"
)
_CARD: Final = re.compile(r"(?<![\d\-])[2-6](?:[ \-]?\d){12,18}(?!\d)")
_IBAN: Final = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])")
_IPV6: Final = re.compile(
    r"(?<![\w:.])(?=[0-9A-Fa-f.]*:[0-9A-Fa-f.]*:)[0-9A-Fa-f:.]{2,45}(?:%[A-Za-z0-9]{1,16})?"
    r"(?![\w:])"
)
_IPV4: Final = re.compile(
    r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
    r"(?!\.?\d)"
)


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban_ok(s: str) -> bool:
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    try:
        return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1
    except ValueError:
        return False


_Slot = tuple[Any, Any]
"""Where a string value lives in the cleaned copy: (container, key or index)."""


@dataclass(frozen=True)
class SanitizeConfig:
    """What the sanitizer does; one per skill grant (the kernel caches a ``Sanitizer``).

    ``redact_secrets`` holds secret *values*, or a mapping name -> value (the name then appears
    in the marker: ``[REDACTED:API_TOKEN]``). Secrets shorter than ``min_encoded_secret_len``
    are redacted in raw form only: the encodings of very short strings match ordinary text.
    ``redact_paths`` are absolute host path prefixes (mounts, home, cwd, site-packages).
    ``marker`` is the truncation marker; ``{bytes}`` is replaced by the count of bytes cut.
    """

    max_output_bytes: int = 256 * 1024
    redact_secrets: Sequence[str] | Mapping[str, str] = ()
    redact_paths: Sequence[str] = ()
    credential_shapes: bool = True
    pii: bool = False
    marker: str = "…[truncated {bytes} bytes]"
    min_encoded_secret_len: int = 8

    def __post_init__(self) -> None:
        if self.max_output_bytes < _MIN_CAP:
            raise ValueError(
                f"max_output_bytes is {self.max_output_bytes}; it must be at least {_MIN_CAP} "
                "so the truncation marker fits"
            )
        if "{bytes}" not in self.marker or len(self.marker) > 40:
            raise ValueError(
                f"marker {self.marker!r} must contain '{{bytes}}' and be at most 40 characters"
            )
        if _INVISIBLE.search(self.marker) or _ANSI.search(self.marker):
            raise ValueError(f"marker {self.marker!r} holds control characters")


@dataclass
class SanitizeReport:
    """What cleaning changed: redactions per kind, characters removed, bytes cut."""

    redactions: Counter[str] = field(default_factory=Counter)
    ansi_removed: int = 0
    controls_removed: int = 0
    invalid_replaced: int = 0
    bytes_cut: int = 0
    strings_truncated: int = 0

    @property
    def changed(self) -> bool:
        return bool(
            self.redactions
            or self.ansi_removed
            or self.controls_removed
            or self.invalid_replaced
            or self.bytes_cut
        )

    def merge(self, other: SanitizeReport) -> None:
        self.redactions.update(other.redactions)
        self.ansi_removed += other.ansi_removed
        self.controls_removed += other.controls_removed
        self.invalid_replaced += other.invalid_replaced
        self.bytes_cut += other.bytes_cut
        self.strings_truncated += other.strings_truncated

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary for the audit log (counts only, never content)."""
        return {
            "redactions": dict(sorted(self.redactions.items())),
            "ansi_removed": self.ansi_removed,
            "controls_removed": self.controls_removed,
            "invalid_replaced": self.invalid_replaced,
            "bytes_cut": self.bytes_cut,
            "strings_truncated": self.strings_truncated,
        }


@dataclass(frozen=True)
class CleanText:
    """Cleaned text and what was changed."""

    text: str
    report: SanitizeReport


@dataclass(frozen=True)
class CleanValue:
    """A cleaned JSON value and what was changed."""

    value: JSONValue
    report: SanitizeReport


def _label(name: str) -> str:
    cleaned = re.sub(r"[^A-Z0-9_]", "_", name.upper()).strip("_")
    return cleaned[:40] or "SECRET"


_MIN_WRAPPED: Final = 8
"""Shortest secret form looked for across whitespace (shorter ones could form by chance)."""
_HEX_SEPARATORS: Final = b":,;-._"
"""Dropped from the hex view of the squeezed text (as are ``0x`` prefixes)."""
_HEX_KEEP: Final = re.compile(b"[^" + re.escape(_HEX_SEPARATORS) + b"]")
_NOT_SPACE: Final = re.compile(r"\S")
_DROP_ASCII_SPACE: Final = str.maketrans(
    "", "", "".join(c for c in map(chr, range(128)) if c.isspace())
)
"""``str.split`` whitespace within ASCII: ``translate`` is ~10x faster than split on ASCII."""
_ESCAPE_STARTS: Final = ("%", "\\", "&#")
_ESCAPE: Final = re.compile(
    r"(?P<b>(?:%[0-9A-Fa-f]{2}|\\x[0-9A-Fa-f]{2})+)"  # percent / \x byte runs (UTF-8)
    r"|\\u(?P<u>[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|[0-9a-fA-F]{4})"
    r"|\\U(?P<U>[0-9A-Fa-f]{8})"  # Python
    r"|\\(?P<c>[\"\\/'bfnrt])"  # JSON short escapes (\/ included)
    r"|&#(?:(?P<d>[0-9]{1,7})|[xX](?P<h>[0-9A-Fa-f]{1,6}));"  # HTML character references
)
_SHORT_ESCAPES: Final = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_BYTE_UNIT: Final = re.compile(r"(?:%|\\x)([0-9A-Fa-f]{2})")
_LATIN1_ERRORS: Final = "bastion-latin1"


def _latin1_fallback(exc: UnicodeError) -> tuple[str, int]:
    """A byte that is not part of valid UTF-8 stands for itself (its Latin-1 character)."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return exc.object[exc.start : exc.end].decode("latin-1"), exc.end


codecs.register_error(_LATIN1_ERRORS, _latin1_fallback)


def _decode_escape(m: re.Match[str]) -> str:
    """What one ``_ESCAPE`` match stands for."""
    kind = m.lastgroup
    value = m.group(kind or 0)
    if kind == "b":
        data = bytes.fromhex(value.replace("%", "").replace("\\x", ""))
        return data.decode("utf-8", _LATIN1_ERRORS)
    if kind == "c":
        return _SHORT_ESCAPES.get(value, value)
    if kind == "u" and len(value) > 4:
        pair = chr(int(value[:4], 16)) + chr(int(value[6:], 16))
        return pair.encode("utf-16", "surrogatepass").decode("utf-16")
    code = int(value, 10 if kind == "d" else 16)
    return chr(code) if code <= 0x10FFFF else m.group(0)


def _base64_cores(raw: bytes) -> set[str]:
    """Substrings that any base64 text containing ``raw`` must contain, at each alignment."""
    cores: set[str] = set()
    n = len(raw)
    for k in range(3):
        enc = base64.b64encode(b"\0" * k + raw + b"\0\0").decode("ascii")
        core = enc[(8 * k + 5) // 6 : (8 * (k + n)) // 6]
        if len(core) >= 4:
            cores.add(core)
            cores.add(core.translate(str.maketrans("+/", "-_")))
    return cores


def _escape_spans(text: str) -> list[tuple[int, int, str]]:
    """Every escape in ``text`` as (start, end, what it stands for), one per character spelled
    (a run of byte escapes is split at its UTF-8 characters), in order."""
    pieces: list[tuple[int, int, str]] = []
    for m in _ESCAPE.finditer(text):
        if m.lastgroup != "b":
            pieces.append((m.start(), m.end(), _decode_escape(m)))
            continue
        units = [(u.start(), u.end(), int(u.group(1), 16)) for u in _BYTE_UNIT.finditer(m[0])]
        data = bytes(u[2] for u in units)
        i = 0
        while i < len(data):
            b = data[i]
            size = 1 if b < 0xC2 or b >= 0xF5 else 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            ch = chr(b)
            if size > 1:
                try:
                    ch = data[i : i + size].decode("utf-8")
                except UnicodeDecodeError:
                    size = 1
            pieces.append((m.start() + units[i][0], m.start() + units[i + size - 1][1], ch))
            i += size
    return pieces


_Map = tuple[list[int], list[int]]


class _View:
    """``text`` seen through one transformation, with where each of its characters came from
    (``starts[i]``/``ends[i]``: the span of the original text that view character ``i`` spells).
    The mapping is built only when a form was found (``locate``): most texts hold none."""

    def __init__(self, text: str | bytes, build: Callable[[], _Map]) -> None:
        self.text = text
        self._build = build
        self._map: _Map | None = None

    def locate(self, i: int, j: int) -> tuple[int, int]:
        """The span of the original text that view characters ``[i, j)`` spell."""
        if self._map is None:
            self._map = self._build()
        starts, ends = self._map
        return starts[i], ends[j - 1]

    def mapping(self) -> _Map:
        if self._map is None:
            self._map = self._build()
        return self._map


def _identity(text: str) -> _View:
    return _View(text, lambda: (list(range(len(text))), list(range(1, len(text) + 1))))


def _decoded_view(text: str) -> _View:
    """``text`` with every escape (percent, ``\\x``, ``\\u``, JSON, HTML references) decoded."""

    def build() -> _Map:
        starts: list[int] = []
        ends: list[int] = []
        at = 0
        for s, e, ch in _escape_spans(text):
            starts += range(at, s)
            ends += range(at + 1, s + 1)
            starts += [s] * len(ch)
            ends += [e] * len(ch)
            at = e
        starts += range(at, len(text))
        ends += range(at + 1, len(text) + 1)
        return starts, ends

    return _View(_ESCAPE.sub(_decode_escape, text), build)


def _kept_view(parent: _View, text: str | bytes, keep: Callable[[], list[int]]) -> _View:
    """A view of ``parent`` that dropped characters; ``keep()`` lists the kept indices."""

    def build() -> _Map:
        starts, ends = parent.mapping()
        idx = keep()
        return [starts[i] for i in idx], [ends[i] for i in idx]

    return _View(text, build)


def _kept_without(s: bytes, sub: bytes) -> list[int]:
    """Indices kept by ``s.replace(sub, b"")`` (non-overlapping, left to right, like it)."""
    out: list[int] = []
    pos = 0
    while True:
        i = s.find(sub, pos)
        if i == -1:
            out += range(pos, len(s))
            return out
        out += range(pos, i)
        pos = i + len(sub)


class _SecretMatcher:
    """Finds every spelling of every secret; one mechanism, views of the text:

    - the text itself: raw values, base64 cores (both alphabets, three alignments) and hex in
      one case, as literals (``str.__contains__`` first; only present ones go into a regex);
    - the text with every escape decoded (percent-encoding of any subset of bytes in any case,
      ``\\xHH``, ``\\uXXXX`` for any subset of characters with surrogate pairs, ``\\/`` and the
      other JSON escapes, HTML character references): raw values;
    - that, with whitespace removed (wrapped base64, split tokens, escaped newlines):
      raw values and base64 cores of 8+ characters;
    - that, in lower case without hex separators (``:,;-._``, ``0x``): the hex of each value.

    A form found in a view is mapped back to the span of the original text it covers, and that
    span is replaced. Encodings compose (percent-encoded base64 in a URL, JSON-escaped hex),
    because each view is built from the previous one."""

    def __init__(self, secrets: list[tuple[str, str]], min_encoded: int) -> None:
        literals: dict[str, str] = {}  # form -> label, looked for in the text itself
        decoded: dict[str, str] = {}  # raw forms looked for in the decoded view
        squeezed: dict[str, str] = {}  # forms looked for without whitespace
        hexes: dict[bytes, str] = {}  # lower-case hex, looked for in the hex view
        for label, value in secrets:
            if not value:
                continue
            raws = {value, value.replace(" ", "+")}  # "+" is a space in form encoding
            for raw_form in raws:
                literals.setdefault(raw_form, label)
                decoded.setdefault(raw_form, label)
                flat = "".join(raw_form.split())
                if len(flat) >= _MIN_WRAPPED:
                    squeezed.setdefault(flat, label)
            raw = value.encode("utf-8", errors="surrogatepass")
            if len(raw) < min_encoded:
                continue
            for core in _base64_cores(raw):
                literals.setdefault(core, label)
                if len(core) >= _MIN_WRAPPED:
                    squeezed.setdefault(core, label)
            hexed = binascii.hexlify(raw).decode()
            literals.setdefault(hexed, label)
            literals.setdefault(hexed.upper(), label)
            hexes.setdefault(hexed.encode("ascii"), label)
        self.literals = sorted(literals.items(), key=lambda f: -len(f[0]))
        self.decoded = sorted(decoded.items(), key=lambda f: -len(f[0]))
        self.squeezed = sorted(squeezed.items(), key=lambda f: -len(f[0]))
        self.hexes = sorted(hexes.items(), key=lambda f: -len(f[0]))
        self._cache: dict[tuple[int, ...], tuple[re.Pattern[str], list[str]]] = {}

    def sub_views(self, text: str, counts: Counter[str]) -> str:
        """Redact forms that only a view shows (run after ``sub``, which took literal ones)."""
        if not self.decoded:
            return text
        spans: list[tuple[int, int, str]] = []
        base: _View | None = None
        base_text = text
        if any(e in text for e in _ESCAPE_STARTS):
            decoded = _decoded_view(text)
            if decoded.text != text:
                base, base_text = decoded, str(decoded.text)
                self._find(decoded, self.decoded, spans)
        parent = base if base is not None else _identity(text)
        flat_text = (
            base_text.translate(_DROP_ASCII_SPACE)
            if base_text.isascii()
            else "".join(base_text.split())
        )
        if flat_text != text and self.squeezed:
            flat = _kept_view(
                parent, flat_text, lambda: [m.start() for m in _NOT_SPACE.finditer(base_text)]
            )
            self._find(flat, self.squeezed, spans)
        else:
            flat = parent
        if self.hexes:
            # bytes: ``translate``/``lower`` are fast on them whatever the text holds; a
            # non-ASCII character becomes one "?" so indices still line up.
            lowered = flat_text.encode("ascii", "replace").lower()
            hex1 = lowered.translate(None, _HEX_SEPARATORS)
            hex2 = hex1.replace(b"0x", b"")
            if any(form in hex2 for form, _ in self.hexes):
                view1 = _kept_view(
                    flat, hex1, lambda: [m.start() for m in _HEX_KEEP.finditer(lowered)]
                )
                self._find(
                    _kept_view(view1, hex2, lambda: _kept_without(hex1, b"0x")),
                    self.hexes,
                    spans,
                )
        if not spans:
            return text
        spans.sort()
        merged: list[tuple[int, int, str]] = []
        for start, end, label in spans:
            if merged and start < merged[-1][1]:
                prev = merged[-1]
                merged[-1] = (prev[0], max(prev[1], end), prev[2])
            else:
                merged.append((start, end, label))
        parts: list[str] = []
        pos = 0
        for start, end, label in merged:
            counts[label] += 1
            parts += [text[pos:start], f"[REDACTED:{label}]"]
            pos = end
        parts.append(text[pos:])
        return "".join(parts)

    @staticmethod
    def _find(
        view: _View, forms: Sequence[tuple[Any, str]], spans: list[tuple[int, int, str]]
    ) -> None:
        vt = view.text
        for form, label in forms:
            i = vt.find(form)
            while i != -1:
                spans.append((*view.locate(i, i + len(form)), label))
                i = vt.find(form, i + len(form))

    def sub(self, text: str, counts: Counter[str]) -> str:
        present = [i for i, (form, _) in enumerate(self.literals) if form in text]
        if not present:
            return text
        key = tuple(present)
        compiled = self._cache.get(key)
        if compiled is None:
            forms = [(re.escape(self.literals[i][0]), self.literals[i][1]) for i in present]
            # Longest first: Python alternation is leftmost-first, not longest.
            forms.sort(key=lambda f: -len(f[0]))
            labels = [label for _, label in forms]
            rx = re.compile("|".join(f"(?P<s{i}>{pat})" for i, (pat, _) in enumerate(forms)))
            compiled = (rx, labels)
            if len(self._cache) < 256:
                self._cache[key] = compiled
        rx, labels = compiled

        def repl(m: re.Match[str]) -> str:
            label = labels[int((m.lastgroup or "s0")[1:])]
            counts[label] += 1
            return f"[REDACTED:{label}]"

        return rx.sub(repl, text)


class Sanitizer:
    """Cleans text and JSON values under one ``SanitizeConfig`` (thread-safe, reusable)."""

    def __init__(self, config: SanitizeConfig | None = None) -> None:
        self.config = config or SanitizeConfig()
        secrets = self.config.redact_secrets
        named: list[tuple[str, str]] = (
            [(_label(k), v) for k, v in secrets.items()]
            if isinstance(secrets, Mapping)
            else [("SECRET", v) for v in secrets]
        )
        self._secrets = _SecretMatcher(named, self.config.min_encoded_secret_len)
        paths = sorted(
            {p.rstrip("/\\") for p in self.config.redact_paths if len(p.rstrip("/\\")) > 1},
            key=len,
            reverse=True,
        )
        # Every occurrence is hidden, even inside a longer name (``/home/alice.bak``): the
        # prefix itself is the host fact (a user name, a mount's location).
        self._paths = tuple(paths)
        self._path_re = re.compile("|".join(re.escape(p) for p in paths)) if paths else None
        # Short strings already found clean (keys and small values repeat across a skill's
        # outputs). Only unchanged strings are remembered, so the report stays exact; the
        # config is frozen, so a clean string stays clean. Bounded, cleared when full.
        self._known_clean: set[str] = set()

    # -- text ---------------------------------------------------------------------------

    def clean_text(self, text: str | bytes) -> CleanText:
        """Clean one string (bytes are decoded as UTF-8) and cap it at ``max_output_bytes``."""
        report = SanitizeReport()
        out = self._clean(text, report)
        size = len(out.encode("utf-8"))
        if size > self.config.max_output_bytes:
            out = _truncate_to(out, self.config.max_output_bytes, self, report, json_cost=False)
        return CleanText(out, report)

    def _clean(self, text: str | bytes, report: SanitizeReport) -> str:
        """Steps 1-3 (no size cap)."""
        original = text if isinstance(text, str) and len(text) <= _MEMO_MAX_LEN else None
        if original is not None and original in self._known_clean:
            return original
        if isinstance(text, (bytes, bytearray, memoryview)):
            raw = bytes(text)
            text = raw.decode("utf-8", errors="replace")
            if "\ufffd" in text:
                report.invalid_replaced += text.count("\ufffd") - raw.count("\ufffd".encode())
        elif not text.isascii():
            text, n = _SURROGATE.subn("\ufffd", text)
            report.invalid_replaced += n
        if not text.isprintable():
            text = self._strip_controls(text, report)
        for _ in range(_MAX_PASSES):
            before = sum(report.redactions.values())
            text = self._redact(text, report)
            if sum(report.redactions.values()) == before:
                if original is not None and text == original:
                    if len(self._known_clean) >= _MEMO_MAX_ENTRIES:
                        self._known_clean.clear()
                    self._known_clean.add(original)
                return text
        # A pathological secret that re-forms out of the markers themselves: drop the text.
        report.redactions["UNSTABLE"] += 1
        return ""

    def _strip_controls(self, text: str, report: SanitizeReport) -> str:
        text, n = _ANSI.subn("", text)
        report.ansi_removed += n
        text = _NEWLINES.sub("\n", text)
        before = len(text)
        text = _INVISIBLE.sub("", text)
        report.controls_removed += before - len(text)
        return text

    def _redact(self, text: str, report: SanitizeReport) -> str:
        counts = report.redactions
        text = self._secrets.sub(text, counts)
        text = self._secrets.sub_views(text, counts)
        if self.config.credential_shapes:
            text = _redact_pem(text, counts)
            for name, anchors, rx in _CREDENTIALS:
                if any(a in text for a in anchors):
                    text = _sub_count(rx, f"[REDACTED:{name}]", text, counts, name)
            if "earer" in text or "EARER" in text:
                text = _sub_count(_BEARER, r"\1[REDACTED:BEARER]", text, counts, "BEARER")
        if self._path_re is not None and any(p in text for p in self._paths):
            text = _sub_count(self._path_re, "[path]", text, counts, "PATH")
        if self.config.pii:
            text = _redact_pii(text, counts)
        return text

    # -- values -----------------------------------------------------------------------------

    def clean_value(self, value: JSONValue) -> CleanValue:
        """Clean every string (keys too) of a JSON value, then cap its serialized size.

        Over the cap, the longest strings are cut (each ends with the marker) down to a common
        length; if even that cannot fit, the value becomes one string: its JSON text, cut.
        The walk is iterative; callers bound depth with ``jsonsafe.check_value`` first.
        """
        report = SanitizeReport()
        cleaned, strings = self._walk(value, report)
        size = len(_COMPACT.encode(cleaned).encode("utf-8"))
        cap = self.config.max_output_bytes
        if size > cap:
            cleaned = self._fit(cleaned, strings, size, cap, report)
        return CleanValue(cleaned, report)

    def _walk(self, value: Any, report: SanitizeReport) -> tuple[Any, list[_Slot]]:
        """Copy ``value`` with every string cleaned; return where the string values are.

        Only containers go on the stack, as (source, its new copy); scalars are copied
        (strings cleaned) as their container is filled.
        """
        clean = self._clean
        strings: list[_Slot] = []
        child: Any
        root: list[Any] = [None]
        stack: list[tuple[Any, Any]] = [([value], root)]
        while stack:
            src, dst = stack.pop()
            is_dict = isinstance(src, dict)
            for k, v in src.items() if is_dict else enumerate(src):
                if is_dict:
                    k = clean(str(k), report)
                    if k in dst:
                        n = 2
                        while f"{k}#{n}" in dst:
                            n += 1
                        k = f"{k}#{n}"
                if isinstance(v, str):
                    dst[k] = clean(v, report)
                    strings.append((dst, k))
                elif isinstance(v, dict):
                    dst[k] = child = {}
                    stack.append((v, child))
                elif isinstance(v, (list, tuple)):
                    dst[k] = child = [None] * len(v)
                    stack.append((v, child))
                else:
                    dst[k] = v
        return root[0], strings

    def _fit(
        self,
        value: Any,
        strings: list[_Slot],
        size: int,
        cap: int,
        report: SanitizeReport,
    ) -> Any:
        costs = [_json_len(str(parent[key])) for parent, key in strings]
        fixed = size - sum(costs)
        worst_marker = _json_len(self.config.marker.format(bytes=10**12))
        # Largest per-string content budget L such that the total fits (binary search).
        lo, hi, best = 0, max(costs, default=0), -1
        while lo <= hi:
            mid = (lo + hi) // 2
            total = fixed + sum(c if c <= mid + worst_marker else mid + worst_marker for c in costs)
            if total <= cap:
                best, lo = mid, mid + 1
            else:
                hi = mid - 1
        if best >= 0:
            for (parent, key), cost in zip(strings, costs, strict=True):
                if cost > best + worst_marker:
                    parent[key] = _truncate_to(
                        str(parent[key]), best + worst_marker, self, report, json_cost=True
                    )
            text = _COMPACT.encode(value)
            if len(text.encode("utf-8")) <= cap:
                return value
        # Structure alone is over the cap: hand back the JSON text, cut, as one string.
        text = _COMPACT.encode(value)
        return _truncate_to(text, cap, self, report, json_cost=True)


def _json_len(s: str) -> int:
    """Bytes of ``s`` as a compact JSON string (quotes and escapes included)."""
    return len(s.encode("utf-8")) + 2 + s.count('"') + s.count("\\") + s.count("\n") + s.count("\t")


def _truncate_to(
    text: str,
    budget: int,
    san: Sanitizer,
    report: SanitizeReport,
    *,
    json_cost: bool,
) -> str:
    """``text`` cut to fit ``budget`` bytes together with the marker (as a JSON string if
    ``json_cost``). The kept prefix is cleaned again: a cut can make a token end where it did
    not (``a@b.cd`` of ``a@b.cde``), and the result must be a fixed point of cleaning."""
    measure: Callable[[str], int] = _json_len if json_cost else (lambda s: len(s.encode()))
    original = measure(text)
    marker_room = measure(san.config.marker.format(bytes=10**12)) - (2 if json_cost else 0)
    keep = max(0, budget - marker_room - (2 if json_cost else 0))
    prefix = text
    for _ in range(8):
        if measure(prefix) - (2 if json_cost else 0) <= keep:
            break
        raw = prefix.encode("utf-8")[:keep]
        prefix = raw.decode("utf-8", errors="ignore")
        while measure(prefix) - (2 if json_cost else 0) > keep:
            over = measure(prefix) - (2 if json_cost else 0) - keep
            prefix = prefix[: max(0, len(prefix) - max(1, over))]
        sub = SanitizeReport()
        prefix = san._clean(prefix, sub)
        report.redactions.update(sub.redactions)
    else:
        prefix = ""
    cut = original - measure(prefix)
    report.bytes_cut += cut
    report.strings_truncated += 1
    return prefix + san.config.marker.format(bytes=cut)


def _sub_count(
    rx: re.Pattern[str],
    repl: str,
    text: str,
    counts: Counter[str],
    name: str,
) -> str:
    text, n = rx.subn(repl, text)
    if n:
        counts[name] += n
    return text


def _redact_pem(text: str, counts: Counter[str]) -> str:
    """Redact PEM private key blocks; an unterminated one is redacted to the end."""
    if "-----BEGIN " not in text:
        return text
    out: list[str] = []
    pos = 0
    while True:
        begin = _PEM_BEGIN.search(text, pos)
        if begin is None:
            break
        end = _PEM_END.search(text, begin.end())
        out.append(text[pos : begin.start()])
        out.append("[REDACTED:PRIVATE_KEY]")
        counts["PRIVATE_KEY"] += 1
        if end is None:
            return "".join(out)
        pos = end.end()
    out.append(text[pos:])
    return "".join(out)


def _redact_pii(text: str, counts: Counter[str]) -> str:
    if "@" in text:
        text = _sub_count(_EMAIL, "[REDACTED:EMAIL]", text, counts, "EMAIL")

    def card(m: re.Match[str]) -> str:
        # Windows of whole digit groups only ("4111 1111 1111 1111 123" holds a card; a run of
        # 16 digits is one number, not a 13-digit card and some digits).
        s = m.group()
        groups = [(g.start(), g.end()) for g in re.finditer(r"\d+", s)]
        best: tuple[int, int] | None = None
        for i in range(len(groups)):
            if s[groups[i][0]] not in "23456":
                continue
            digits = ""
            for j in range(i, len(groups)):
                digits += s[groups[j][0] : groups[j][1]]
                if (
                    13 <= len(digits) <= 19
                    and _luhn(digits)
                    and (best is None or groups[j][1] - groups[i][0] > best[1] - best[0])
                ):
                    best = (groups[i][0], groups[j][1])
        if best is None:
            return s
        counts["CARD"] += 1
        return s[: best[0]] + "[REDACTED:CARD]" + s[best[1] :]

    text = _CARD.sub(card, text)

    def iban(m: re.Match[str]) -> str:
        s = m.group()
        # Whole space-separated groups only ("DE89 3704 0044 0532 0130 00 EUR").
        ends = [len(s)] + [i for i in range(len(s) - 1, 14, -1) if s[i] == " "]
        for end in ends:
            if _iban_ok(s[:end].replace(" ", "")):
                counts["IBAN"] += 1
                return "[REDACTED:IBAN]" + s[end:]
        return s

    text = _IBAN.sub(iban, text)

    def ipv6(m: re.Match[str]) -> str:
        s = m.group()
        core = s.rstrip(".")
        if sum(c in "0123456789abcdefABCDEF" for c in core) < 4:
            return s
        try:
            ipaddress.IPv6Address(core.split("%")[0])
        except ValueError:
            return s
        counts["IP"] += 1
        return "[REDACTED:IP]" + s[len(core) :]

    if text.count(":") >= 2:
        text = _IPV6.sub(ipv6, text)
    if "." in text:
        text = _sub_count(_IPV4, "[REDACTED:IP]", text, counts, "IP")
    return _sub_count(_PHONE, "[REDACTED:PHONE]", text, counts, "PHONE")
