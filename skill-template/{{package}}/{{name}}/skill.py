"""The {{name}} skill: runs inside Bastion's WebAssembly sandbox.

Write a ``run`` function with type hints and a docstring: Bastion imports this module inside
the sandbox (no grants, a short deadline) and derives the tool's input and output schemas from
the real hints (str, int, float, bool, None, list/tuple/set/dict, unions, Literal, Enum,
TypedDict, dataclasses, NamedTuple, ``Annotated[T, Field(ge=..., max_length=...)]``). The
model's JSON arguments arrive converted to those types; return them (or JSON-like values,
``bastion_sdk.Image``/``File``) and the runner converts them back.

Raise ``ValueError`` with a message the caller can act on when the input cannot be handled: it
is reported as ``SKILL_ERROR`` with your message. Any other exception is a bug, and the
conformance kit's fuzz check reports it.

The folder is a package root: sibling modules import as usual, and ``dependencies`` in
skill.toml (pure Python) are vendored with ``bastion pack vendor``. The standard library
that makes sense without processes, sockets or threads is there (``bastion doctor
--modules``), with the guest SDK:

    from bastion_sdk import http, log, secret, config
    http.get(url, headers=None, timeout_ms=None)   # only hosts you declared and were granted
    secret("EXAMPLE_API_TOKEN")                     # only secrets you declared and were granted
    config("api_base")                              # a [config] setting the operator set
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
