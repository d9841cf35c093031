"""The {{name}} skill: runs inside Bastion's WebAssembly sandbox.

Write a ``run`` function with type hints and a docstring: Bastion derives the tool's input
schema from them (str, int, float, bool, None, list/dict of these, Literal, Optional and
TypedDict; defaults must be literals). Return JSON-like values (dict, list, str, int, float,
bool, None).

Raise ``ValueError`` with a message the caller can act on when the input cannot be handled: it
is reported as ``SKILL_ERROR`` with your message. Any other exception is a bug, and the
conformance kit's fuzz check reports it.

The sandbox offers a fixed set of standard modules (json, re, math, datetime, html.parser,
urllib.parse, ...; not sys, socket, subprocess or ctypes) and the guest SDK:

    from bastion_sdk import http, log, secret
    http.get(url, headers=None, timeout_ms=None)   # only hosts you declared and were granted
    secret("EXAMPLE_API_TOKEN")                     # only secrets you declared and were granted
    log.info("message", key="value")               # the host's structured log
"""

from typing import TypedDict

MAX_CHARS = 100_000


class Summary(TypedDict):
    words: int
    longest: str
    text: str


def run(text: str, shout: bool = False) -> Summary:
    """Count the words of a text and find its longest word.

    Args:
        text: The text to look at.
        shout: Return the text in upper case.
    """
    if len(text) > MAX_CHARS:
        raise ValueError(f"text is {len(text)} characters long; the limit is {MAX_CHARS}")
    words = text.split()
    longest = max(words, key=len) if words else ""
    return {"words": len(words), "longest": longest, "text": text.upper() if shout else text}
