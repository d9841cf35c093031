"""Model prices and the cost of a call or a run, in US dollars.

Prices are USD per million tokens (MTok) for input, output, cache reads and cache writes.
``DEFAULT_PRICES`` holds Anthropic's published list prices at the time of writing; prices
change, so operators pass their own ``PriceTable`` (or ``PriceTable.from_mapping`` of a TOML
table). A model is matched by the longest price-table key it starts with; an unknown model
costs nothing and makes the cost ``known=False`` rather than guessing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from .errors import ConfigError
from .models import Usage

__all__ = ["DEFAULT_PRICES", "Cost", "Price", "PriceTable"]

_MTOK: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens. Cache prices default to 0.1x (read) and 1.25x (write) input."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None

    def cost(self, usage: Usage) -> float:
        read = self.cache_read if self.cache_read is not None else self.input * 0.1
        write = self.cache_write if self.cache_write is not None else self.input * 1.25
        return (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_read_tokens * read
            + usage.cache_write_tokens * write
        ) / _MTOK


@dataclass(frozen=True, slots=True)
class Cost:
    """A cost in USD; ``known`` is False when some model had no price."""

    usd: float = 0.0
    known: bool = True

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.usd + other.usd, self.known and other.known)


class PriceTable:
    """Prices by model-name prefix (longest match wins)."""

    def __init__(self, prices: Mapping[str, Price]) -> None:
        self._prices = dict(prices)
        self._order = sorted(self._prices, key=len, reverse=True)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Mapping[str, Any]]) -> PriceTable:
        """From ``{"model-prefix": {"input": 3, "output": 15, "cache_read": 0.3}, ...}``."""
        prices: dict[str, Price] = {}
        for model, row in data.items():
            try:
                prices[model] = Price(
                    float(row["input"]),
                    float(row["output"]),
                    None if row.get("cache_read") is None else float(row["cache_read"]),
                    None if row.get("cache_write") is None else float(row["cache_write"]),
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigError(
                    f"price for {model!r} is invalid: {row!r}",
                    where=f"prices.{model}",
                    fix="give 'input' and 'output' in USD per million tokens",
                ) from exc
        return cls(prices)

    def with_prices(self, prices: Mapping[str, Price]) -> PriceTable:
        """A copy with some prices added or replaced."""
        return PriceTable({**self._prices, **prices})

    def lookup(self, model: str) -> Price | None:
        for key in self._order:
            if model.startswith(key):
                return self._prices[key]
        return None

    def cost(self, model: str, usage: Usage) -> Cost:
        price = self.lookup(model)
        if price is None:
            return Cost(0.0, usage == Usage())
        return Cost(price.cost(usage), True)


DEFAULT_PRICES: Final = PriceTable(
    {
        # Anthropic list prices (platform.claude.com model pages), USD per MTok input / output.
        # Models missing here (tiered or unpublished prices) cost 0 with ``known=False``.
        "claude-fable-5-1": Price(10.0, 50.0),
        "claude-opus-5-5": Price(4.0, 20.0),
        "claude-opus-5": Price(5.0, 25.0),
        "claude-sonnet-5": Price(2.0, 10.0),
        "claude-opus-4-8": Price(5.0, 25.0),
        "claude-opus-4-7": Price(5.0, 25.0),
        "claude-opus-4-6": Price(5.0, 25.0),
        "claude-opus-4-5": Price(5.0, 25.0),
        "claude-opus-4-1": Price(15.0, 75.0),
        "claude-opus-4": Price(15.0, 75.0),
        "claude-sonnet-4": Price(3.0, 15.0),
        "claude-haiku-4-5": Price(1.0, 5.0),
        "claude-3-7-sonnet": Price(3.0, 15.0),
        "claude-3-5-haiku": Price(0.8, 4.0),
        "scripted": Price(0.0, 0.0),
        "test": Price(0.0, 0.0),
    }
)
