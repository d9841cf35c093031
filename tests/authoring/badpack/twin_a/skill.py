"""Twin a."""


def run() -> dict[str, str]:
    """Say which twin this is."""
    return {"twin": "a"}
