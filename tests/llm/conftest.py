"""Fixtures for the LLM loop tests: the fake Messages API server and a function tool host."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.llm.fake_anthropic import FakeAnthropic
from tests.llm.host import FunctionHost


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def host() -> FunctionHost:
    return FunctionHost()
