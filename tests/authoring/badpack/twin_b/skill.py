"""Twin b."""


def run() -> dict[str, str]:
    """Say which twin this is."""
    return {"twin": "b"}
