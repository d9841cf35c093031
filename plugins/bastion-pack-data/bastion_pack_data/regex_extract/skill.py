"""Find every match of a regular expression in a text, with groups and named groups."""

import re
from typing import Literal, TypedDict

MAX_PATTERN_CHARS = 2000
MAX_TEXT_CHARS = 1_000_000
MAX_MATCHES = 1000
MAX_MATCH_CHARS = 2000
"""A single match's text (and each group) is cut to this many characters."""

FLAGS: dict[str, re.RegexFlag] = {
    "IGNORECASE": re.IGNORECASE,
    "MULTILINE": re.MULTILINE,
    "DOTALL": re.DOTALL,
    "VERBOSE": re.VERBOSE,
    "ASCII": re.ASCII,
}


class Match(TypedDict):
    match: str
    start: int
    end: int
    groups: list[str | None]
    named: dict[str, str | None]


class Extraction(TypedDict):
    count: int
    truncated: bool
    matches: list[Match]


def _cut(value: str | None) -> str | None:
    if value is None or len(value) <= MAX_MATCH_CHARS:
        return value
    return value[:MAX_MATCH_CHARS] + "…"


def run(
    pattern: str,
    text: str,
    flags: list[Literal["IGNORECASE", "MULTILINE", "DOTALL", "VERBOSE", "ASCII"]] | None = None,
    max_matches: int = 100,
) -> Extraction:
    """Extract every match of a Python regular expression from a text.

    Each match lists its text, start and end offsets, numbered groups and named groups
    ((?P<name>...)). Matches beyond max_matches are not returned and truncated is true.

    Args:
        pattern: The regular expression (Python syntax), e.g. "(?P<user>\\w+)@(?P<host>[\\w.]+)".
        text: The text to search.
        flags: Regex flags: IGNORECASE, MULTILINE, DOTALL, VERBOSE, ASCII.
        max_matches: The most matches to return (1 to 1000).
    """
    if not 1 <= max_matches <= MAX_MATCHES:
        raise ValueError(f"max_matches must be between 1 and {MAX_MATCHES}, got {max_matches}")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"the pattern is longer than {MAX_PATTERN_CHARS} characters")
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"the text is {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
    combined = re.RegexFlag(0)
    for name in flags or []:
        if name not in FLAGS:
            raise ValueError(f"unknown flag {name!r}; use one of {', '.join(FLAGS)}")
        combined |= FLAGS[name]
    try:
        compiled = re.compile(pattern, combined)
    except (re.error, ValueError) as exc:
        raise ValueError(f"invalid pattern {pattern[:100]!r}: {exc}") from None
    except (RecursionError, OverflowError, MemoryError):
        raise ValueError(f"pattern {pattern[:100]!r} is too complex") from None
    matches: list[Match] = []
    truncated = False
    for m in compiled.finditer(text):
        if len(matches) == max_matches:
            truncated = True
            break
        matches.append(
            {
                "match": _cut(m.group(0)) or "",
                "start": m.start(),
                "end": m.end(),
                "groups": [_cut(g) for g in m.groups()],
                "named": {k: _cut(v) for k, v in m.groupdict().items()},
            }
        )
    return {"count": len(matches), "truncated": truncated, "matches": matches}
