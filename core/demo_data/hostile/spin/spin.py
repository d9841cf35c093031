def run() -> int:
    """Loop forever."""
    n = 0
    while True:
        n += 1
