def run(mb: int = 2048) -> int:
    """Allocate `mb` megabytes and touch them."""
    blocks = []
    for _ in range(mb):
        blocks.append(bytearray(1024 * 1024))
    return len(blocks)
