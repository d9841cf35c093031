"""The error scrubber: what an error message may say to a model or on the CLI.

Error messages of skills and of the host can carry host facts: paths, Python tracebacks, tokens
echoed back by an API, terminal escapes. ``scrub_message`` removes all of them and bounds the
length; the full detail goes to the audit log only (already cleaned by the sanitizer there).
Unlike the output sanitizer it does not need to know the host paths: *any* absolute path is
hidden (POSIX, ``~/...``, Windows drive and UNC paths, ``file:`` URLs), and URLs are kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

from .sanitize import SanitizeConfig, Sanitizer

__all__ = ["scrub_message"]

_TRACEBACK_START: Final = "Traceback (most recent call last)"
_CHAINING: Final = re.compile(
    r"^(?:During handling of the above exception, another exception occurred:"
    r"|The above exception was the direct cause of the following exception:)\s*$"
)
_FRAME: Final = re.compile(r'File "[^"\n]{0,4096}", line \d+(?:, in [^\n]*)?')
_SEG = r"[\w.@+~%\-]"
_PATHS: Final = re.compile(
    r"\bfile:[^\s\"'<>,;]*"  # file: URLs
    r"|(?<![\w.:/~\\\-])~?/" + _SEG + r"*(?:/" + _SEG + r"*)*"  # /abs/path, ~/path
    r"|(?<![\w\\])[A-Za-z]:\\[^\s\"'<>|,;]*"  # C:\path
    r"|(?<![\w\\])\\\\[^\s\"'<>|,;]+"  # \\server\share
)
_SPACE: Final = re.compile(r"\s+")


def _drop_tracebacks(msg: str) -> str:
    """Remove traceback blocks (keeping the final ``Error: ...`` line) and stray frame lines."""
    if _TRACEBACK_START not in msg and 'File "' not in msg:
        return msg
    kept: list[str] = []
    in_tb = False
    for line in msg.splitlines():
        if _TRACEBACK_START in line:
            head = line[: line.index(_TRACEBACK_START)].rstrip()
            if head:
                kept.append(head)
            in_tb = True
            continue
        if in_tb and (not line.strip() or line[:1].isspace()):
            continue  # frames, source lines, carets
        in_tb = False
        if _CHAINING.match(line):
            continue
        kept.append(_FRAME.sub("", line))
    return "\n".join(kept)


def scrub_message(
    msg: str,
    *,
    secrets: Iterable[str] | Mapping[str, str] = (),
    paths: Iterable[str] = (),
    limit: int = 300,
    keep_prefixes: Iterable[str] = (),
) -> str:
    """A one-line message without host paths, tracebacks, secrets or control characters,
    at most ``limit`` characters (cut with ``…``).

    ``keep_prefixes`` are guest paths (a sandboxed skill's mount points, e.g. ``/files``): an
    absolute path equal to one or under one is the skill's own view, not a host fact, and is
    kept so that its errors stay useful. Known host ``paths`` are redacted before that.
    """
    text = _drop_tracebacks(msg)
    secret_arg = dict(secrets) if isinstance(secrets, Mapping) else tuple(secrets)
    sanitizer = Sanitizer(
        SanitizeConfig(
            max_output_bytes=max(4 * len(text), 64) + 64,
            redact_secrets=secret_arg,
            redact_paths=tuple(paths),
        )
    )
    text = sanitizer.clean_text(text).text
    keep = tuple(p.rstrip("/") for p in keep_prefixes if p.startswith("/") and p != "/")

    def hide(m: re.Match[str]) -> str:
        path = m.group(0)
        if any(path == k or path.startswith(k + "/") for k in keep):
            return path
        return "[path]"

    text = _PATHS.sub(hide, text)
    text = _SPACE.sub(" ", text).strip()
    if len(text) > limit:
        text = text[: max(0, limit - 1)].rstrip() + "…"
    return text
