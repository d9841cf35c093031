"""Input/output validation cost per call: the stock jsonschema validator (``re``) against
Bastion's SchemaValidator (RE2, closed registry, linear uniqueItems, work budget).

Run: .venv/bin/python bench/bench_schemas.py. Each case validates the same value with both
validators, built once (as the kernel caches them), alternating batches; figures are medians
of the batches (ms per call), and the ratio is ours / stock measured in the same run. The
catastrophic case is sized so that the stock validator still finishes.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from jsonschema import Draft202012Validator

from bastion.schemas import SchemaValidator

TOOL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1, "maxLength": 100},
        "units": {"enum": ["metric", "imperial"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
        "email": {"type": "string", "pattern": "^[a-z0-9._%+-]+@[a-z0-9.-]+\\.[a-z]{2,}$"},
    },
    "required": ["city"],
    "additionalProperties": False,
}
TOOL_INPUT = {"city": "Lisbon", "units": "metric", "days": 3, "email": "ana@example.org"}

ROWS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "rows": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{6}$"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
                "patternProperties": {"^x-": {"type": "string"}},
                "additionalProperties": False,
            },
        }
    },
}
ROWS_OUTPUT = {
    "rows": [{"id": f"ABC-{i:06d}", "tags": ["a", "b"], "x-note": "n"} for i in range(1000)]
}

UNIQUE_SCHEMA: dict[str, Any] = {"type": "array", "uniqueItems": True}
UNIQUE_VALUE = [{"id": i, "name": f"item {i}"} for i in range(2000)]

REDOS_SCHEMA: dict[str, Any] = {"type": "string", "pattern": "^(a+)+$"}
REDOS_VALUE = "a" * 22 + "!"


def timed(fn: Callable[[], object], batch: int) -> float:
    t0 = time.perf_counter()
    for _ in range(batch):
        fn()
    return (time.perf_counter() - t0) / batch * 1000


def case(name: str, schema: dict[str, Any], value: Any, batch: int, rounds: int = 15) -> None:
    """Stock and ours alternate batch by batch, so load drift on a busy machine hits both."""
    stock = Draft202012Validator(schema)
    ours = SchemaValidator(schema)
    s_times: list[float] = []
    o_times: list[float] = []
    for _ in range(rounds):
        s_times.append(timed(lambda: list(stock.iter_errors(value)), batch))
        o_times.append(timed(lambda: list(ours.iter_errors(value)), batch))
    s, o = statistics.median(s_times), statistics.median(o_times)
    print(
        f"{name:<36} stock {s:10.4f} ms  ours {o:10.4f} ms  ours/stock {o / s:6.2f}x"
        f"  (min {min(s_times):.4f} / {min(o_times):.4f})"
    )


def main() -> None:
    case("tool input (4 props, 1 pattern)", TOOL_SCHEMA, TOOL_INPUT, 500)
    case("output: 1000 rows, 2 patterns each", ROWS_SCHEMA, ROWS_OUTPUT, 2)
    case("uniqueItems, 2000 objects", UNIQUE_SCHEMA, UNIQUE_VALUE, 1, rounds=3)
    case("^(a+)+$ on 'a'*22+'!'", REDOS_SCHEMA, REDOS_VALUE, 1, rounds=3)


if __name__ == "__main__":
    main()
