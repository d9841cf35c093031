"""Fails with ZeroDivisionError (a bug, not a refusal) when n is 0."""


def run(n: int) -> dict[str, int]:
    """Divide 100 by n.

    Args:
        n: The divisor.
    """
    return {"value": 100 // n}
