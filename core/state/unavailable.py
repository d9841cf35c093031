"""The one exception every backend raises when the shared store does not answer."""

from __future__ import annotations

__all__ = ["StoreUnavailable"]


class StoreUnavailable(Exception):
    """The shared store did not answer; ``reason`` is for the operator (audit, health),
    ``public`` a short phrase safe for callers and models (no address, no credential)."""

    def __init__(self, reason: str, public: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.public = public
