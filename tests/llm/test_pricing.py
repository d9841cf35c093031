"""Price table lookups and costs."""

from __future__ import annotations

import pytest

from bastion.errors import ConfigError
from bastion.models import Usage
from bastion.pricing import DEFAULT_PRICES, Cost, Price, PriceTable


def test_longest_prefix_wins() -> None:
    table = PriceTable({"claude-opus-5": Price(5, 25), "claude-opus-5-5": Price(4, 20)})
    assert table.lookup("claude-opus-5-5-20260901") == Price(4, 20)
    assert table.lookup("claude-opus-5-20260724") == Price(5, 25)
    assert table.lookup("gpt") is None


def test_cost_includes_cache_tokens() -> None:
    price = Price(input=3, output=15)
    usage = Usage(1_000_000, 100_000, cache_read_tokens=1_000_000, cache_write_tokens=1_000_000)
    assert price.cost(usage) == pytest.approx(3 + 1.5 + 0.3 + 3.75)
    explicit = Price(3, 15, cache_read=1, cache_write=2)
    assert explicit.cost(usage) == pytest.approx(3 + 1.5 + 1 + 2)


def test_unknown_model_cost_is_flagged() -> None:
    assert DEFAULT_PRICES.cost("mystery", Usage(10, 10)) == Cost(0.0, False)
    assert DEFAULT_PRICES.cost("mystery", Usage()) == Cost(0.0, True)
    assert DEFAULT_PRICES.cost("claude-haiku-4-5", Usage(1_000_000, 0)).usd == pytest.approx(1.0)


def test_from_mapping_validates() -> None:
    table = PriceTable.from_mapping({"m": {"input": "1.5", "output": 2}})
    assert table.lookup("m") == Price(1.5, 2.0)
    with pytest.raises(ConfigError, match="'m'"):
        PriceTable.from_mapping({"m": {"input": 1}})
    assert DEFAULT_PRICES.with_prices({"m": Price(1, 1)}).lookup("m") == Price(1, 1)
