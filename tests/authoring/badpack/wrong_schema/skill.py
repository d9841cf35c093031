"""Returns a string where its output schema promises an integer."""


def run(text: str) -> dict[str, str]:
    """Count words.

    Args:
        text: Any text.
    """
    return {"count": str(len(text.split()))}
