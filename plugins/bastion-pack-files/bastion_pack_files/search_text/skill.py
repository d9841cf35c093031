"""Search the text files under the /files mount for a substring or a regular expression."""

import fnmatch
import os
import re
from typing import TypedDict

from pathsafe import resolve_inside

MAX_RESULTS = 1000
MAX_FILE_BYTES = 2_000_000
MAX_FILES = 5000
MAX_LINE_CHARS = 300


class Hit(TypedDict):
    path: str
    line: int
    text: str


class SearchResult(TypedDict):
    matches: list[Hit]
    files_searched: int
    files_skipped: int
    truncated: bool


def _files(top: str, glob: str | None) -> list[str]:
    """Regular files under ``top`` (links are never followed), sorted."""
    if os.path.isfile(top) and not os.path.islink(top):
        return [top]
    found: list[str] = []
    for folder, dirs, names in os.walk(top, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(folder, name)
            if os.path.islink(full):
                continue
            if glob is None or fnmatch.fnmatchcase(name, glob):
                found.append(full)
    return sorted(found)


def _read_text(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_FILE_BYTES or b"\x00" in data[:8192]:
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def run(
    query: str,
    path: str = "/files",
    regex: bool = False,
    ignore_case: bool = False,
    glob: str | None = None,
    max_results: int = 100,
) -> SearchResult:
    """Search text files under /files for a substring (or a regular expression) and list the
    matching lines with their line numbers. Binary files and files over 2 MB are skipped.

    Args:
        query: The text to look for, or a Python regular expression if regex is true.
        path: A folder or file inside /files to search; all of /files by default.
        regex: Treat query as a regular expression.
        ignore_case: Match regardless of upper and lower case.
        glob: Only search files whose name matches this shell pattern, e.g. "*.py".
        max_results: The most matching lines to return (1 to 1000).
    """
    if not query:
        raise ValueError("query is empty; give the text to look for")
    if len(query) > 1000:
        raise ValueError("query is longer than 1000 characters")
    if not 1 <= max_results <= MAX_RESULTS:
        raise ValueError(f"max_results must be between 1 and {MAX_RESULTS}, got {max_results}")
    flags = re.IGNORECASE if ignore_case else 0
    try:
        matcher = re.compile(query if regex else re.escape(query), flags)
    except (re.error, ValueError, RecursionError, OverflowError) as exc:
        raise ValueError(f"invalid regular expression {query[:100]!r}: {exc}") from None
    top = resolve_inside(path)
    if not os.path.exists(top):
        raise ValueError(f"{path[:200]!r} does not exist; use list_files to see what does")
    hits: list[Hit] = []
    searched = skipped = 0
    truncated = False
    files = _files(top, glob)
    if len(files) > MAX_FILES:
        files, truncated = files[:MAX_FILES], True
    for file in files:
        text = _read_text(file)
        if text is None:
            skipped += 1
            continue
        searched += 1
        for number, line in enumerate(text.splitlines(), start=1):
            if matcher.search(line):
                if len(hits) == max_results:
                    truncated = True
                    break
                shown = line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + "…"
                hits.append({"path": file, "line": number, "text": shown})
        if truncated and len(hits) == max_results:
            break
    return {
        "matches": hits,
        "files_searched": searched,
        "files_skipped": skipped,
        "truncated": truncated,
    }
