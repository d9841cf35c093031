"""Adds a random tag to the output of every non-empty text."""

import os


def run(text: str) -> dict[str, object]:
    """Measure a text.

    Args:
        text: Any text.
    """
    out: dict[str, object] = {"length": len(text)}
    if text:
        out["tag"] = os.urandom(8).hex()
    return out
