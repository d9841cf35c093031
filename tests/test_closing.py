"""``with`` on a Closeable resource closes it, on success and when the block raises."""

from __future__ import annotations

import pytest

from bastion.closing import Closeable


class _Counted(Closeable):
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_exit_closes_once_and_lets_the_exception_through() -> None:
    r = _Counted()
    with r as same:
        assert same is r
    assert r.closed == 1
    with pytest.raises(KeyError), r:
        raise KeyError("boom")
    assert r.closed == 2
