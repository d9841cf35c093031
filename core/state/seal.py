"""Sealed tokens: state handed to a client or a store that comes back unaltered, or not at all.

A token is ``v1.<key id>.<payload>.<mac>`` (base64url): the payload is JSON with an expiry and a
binding (who or what it is for), the mac an HMAC-SHA256 under one of the deployment's keys.
Keys come from environment variables named in ``[state] seal_keys_env``: the first seals, all
open (rotation). Replicas sharing the keys open each other's tokens; without configured keys
a process draws its own random key, so its tokens open only in that process.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, final

from ..errors import ConfigError

__all__ = ["SealError", "Sealer", "sealer_from_env"]

_MIN_KEY = 32
_MAX_TOKEN = 64 * 1024


class SealError(ValueError):
    """A token did not open: malformed, forged, sealed by an unknown key, expired or bound to
    something else; the message says which."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _kid(key: bytes) -> str:
    return hashlib.sha256(b"bastion-seal-kid\0" + key).hexdigest()[:12]


@final
class Sealer:
    """Seals and opens JSON payloads bound to a purpose string, with an expiry."""

    def __init__(
        self, keys: Sequence[bytes], *, shared: bool, clock: Callable[[], float] = time.time
    ) -> None:
        if not keys:
            raise ValueError("a Sealer needs at least one key")
        self._keys = {_kid(k): k for k in keys}
        self._current = _kid(keys[0])
        self.shared = shared
        """True when the keys came from the policy (replicas can open each other's tokens)."""
        self._clock = clock

    @classmethod
    def ephemeral(cls) -> Sealer:
        return cls([secrets.token_bytes(32)], shared=False)

    def seal(self, data: Any, *, bind: str, ttl_s: float) -> str:
        body = json.dumps(
            {"exp": round(self._clock() + ttl_s, 3), "bind": bind, "data": data},
            separators=(",", ":"),
            ensure_ascii=True,
        ).encode()
        head = f"v1.{self._current}.{_b64(body)}"
        mac = hmac.new(self._keys[self._current], head.encode(), hashlib.sha256).digest()
        return f"{head}.{_b64(mac)}"

    def open(self, token: str, *, bind: str) -> Any:
        """The sealed data, or ``SealError`` saying why the token is refused."""
        if not isinstance(token, str) or len(token) > _MAX_TOKEN:
            raise SealError("the token is not a string of at most 64 KiB")
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != "v1":
            raise SealError("the token is malformed (expected v1.<kid>.<payload>.<mac>)")
        _, kid, body64, mac64 = parts
        key = self._keys.get(kid)
        if key is None:
            raise SealError(f"the token was sealed by key {kid[:12]!r}, which this node lacks")
        try:
            mac = _unb64(mac64)
            body = _unb64(body64)
        except (ValueError, TypeError):
            raise SealError("the token is not valid base64url") from None
        want = hmac.new(key, f"v1.{kid}.{body64}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(mac, want):
            raise SealError("the token's seal does not match (altered or forged)")
        try:
            doc = json.loads(body)
        except ValueError:
            raise SealError("the token's payload is not JSON") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("exp"), (int, float)):
            raise SealError("the token's payload has no expiry")
        if doc.get("bind") != bind:
            raise SealError("the token is bound to another request, caller or tenant")
        if doc["exp"] <= self._clock():
            raise SealError("the token has expired")
        return doc.get("data")


def sealer_from_env(
    names: Sequence[str], environ: Mapping[str, str], *, source: str | None = None
) -> Sealer:
    """A Sealer over the keys in the named variables (each at least 32 bytes), or a random
    per-process key when ``names`` is empty."""
    if not names:
        return Sealer.ephemeral()
    keys: list[bytes] = []
    for name in names:
        value = environ.get(name, "")
        if len(value.encode()) < _MIN_KEY:
            raise ConfigError(
                f"[state] seal_keys_env names {name!r}, which is "
                + ("not set" if not value else f"only {len(value.encode())} bytes long"),
                source=source,
                where="state.seal_keys_env",
                fix=f"export {name} with at least {_MIN_KEY} random bytes, e.g. "
                "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`",
            )
        keys.append(value.encode())
    return Sealer(keys, shared=True)
