def run() -> str:
    """Print 50 MB, then return a 10 MB string."""
    line = "B" * 1023
    for _ in range(50 * 1024):
        print(line)
    return "A" * (10 * 1024 * 1024)
