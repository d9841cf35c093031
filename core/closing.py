"""``with resource:`` for Bastion's resources: leaving the block calls the resource's ``close``."""

from __future__ import annotations

from typing import Self

__all__ = ["Closeable"]


class Closeable:
    """Base for objects with a ``close()``: ``__enter__`` returns the object, ``__exit__``
    closes it, whatever ended the block (exceptions propagate)."""

    __slots__ = ()

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
