"""Draw numbers as a small PNG line chart (a sparkline) the model can look at."""

import itertools
import struct
import zlib
from typing import Annotated

from bastion_sdk import Field, Image

MAX_POINTS = 2000


def _png(width: int, height: int, rows: list[bytearray]) -> bytes:
    """An 8-bit grayscale PNG (no filter) of ``rows``."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + bytes(r) for r in rows)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def _line(rows: list[bytearray], x0: int, y0: int, x1: int, y1: int) -> None:
    steps = max(abs(x1 - x0), abs(y1 - y0), 1)
    for i in range(steps + 1):
        x = x0 + (x1 - x0) * i // steps
        y = y0 + (y1 - y0) * i // steps
        rows[y][x] = 0


def run(
    values: Annotated[
        list[float], Field("the numbers to draw, in order", min_length=2, max_length=MAX_POINTS)
    ],
    width: Annotated[int, Field("image width in pixels", ge=16, le=1024)] = 240,
    height: Annotated[int, Field("image height in pixels", ge=8, le=512)] = 60,
) -> Image:
    """Draw a list of numbers as a sparkline: a small black-on-white PNG line chart.

    Args:
        values: the numbers to draw, in order
        width: image width in pixels
        height: image height in pixels
    """
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    rows = [bytearray(b"\xff" * width) for _ in range(height)]
    n = len(values)
    points = [
        (round(i * (width - 1) / (n - 1)), round((high - v) * (height - 1) / span))
        for i, v in enumerate(values)
    ]
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        _line(rows, x0, y0, x1, y1)
    return Image(_png(width, height, rows), "image/png")
