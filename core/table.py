"""Plain-text tables for the CLI: aligned columns, wrapped long cells, no colour codes."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

__all__ = ["render_table"]


def render_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], *, max_width: int = 60
) -> str:
    """Render rows under headers; cells longer than ``max_width`` wrap onto extra lines."""
    wrapped = [[textwrap.wrap(c, max_width) or [""] for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in wrapped:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], *(len(line) for line in cell))
    out = [
        "  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip(),
        "  ".join("-" * w for w in widths),
    ]
    for row in wrapped:
        height = max(len(c) for c in row)
        for k in range(height):
            out.append(
                "  ".join(
                    (cell[k] if k < len(cell) else "").ljust(widths[i])
                    for i, cell in enumerate(row)
                ).rstrip()
            )
    return "\n".join(out)
