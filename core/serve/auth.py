"""Who is calling: bearer tokens from the policy mapped to a caller, tenant and roles.

The second step of serving over HTTP (``auth -> frame limits -> MCP dispatch``).
``[[serve.tokens]]`` holds sha256 digests of tokens, or names an environment variable holding
one; the plain token is never stored or passed on (not to skills, not to the audit log).
``PolicyTokenVerifier`` is the SDK's ``TokenVerifier`` seam, so an operator with an OAuth
issuer plugs in their own verifier instead (its ``AccessToken.resource`` is checked against
the server's audience). A request without a valid token gets 401 and an audit ``decision``
record, and nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.errors import PolicyError
from bastion.policy import Policy

__all__ = [
    "LOCAL_CALLER",
    "POLICY_ISSUER",
    "AuthAuditMiddleware",
    "Caller",
    "CurrentTokenVerifier",
    "PolicyTokenVerifier",
    "caller_from_token",
    "current_caller",
]

POLICY_ISSUER: Final[str] = "bastion-policy"
"""The ``iss`` claim of tokens that ``PolicyTokenVerifier`` accepted."""


@dataclass(frozen=True, slots=True)
class Caller:
    """The identity one MCP request runs as."""

    name: str
    tenant: str = "default"
    roles: tuple[str, ...] = ()
    issuer: str | None = None

    @property
    def principal(self) -> str:
        """A stable string naming the caller (request state is bound to it)."""
        return "\x1f".join([self.issuer or "", self.tenant, self.name])


LOCAL_CALLER: Final[Caller] = Caller("stdio")
"""The caller of ``bastion mcp``: whoever started the process (stdio has no tokens)."""


def caller_from_token(token: AccessToken) -> Caller:
    """The caller an accepted token stands for: ``tenant`` claim, scopes as roles."""
    claims = token.claims or {}
    tenant = claims.get("tenant")
    issuer = claims.get("iss")
    return Caller(
        name=token.subject or token.client_id,
        tenant=tenant if isinstance(tenant, str) and tenant else "default",
        roles=tuple(token.scopes),
        issuer=str(issuer) if issuer is not None else None,
    )


def current_caller() -> Caller:
    """The caller of the request being handled (the bearer token's; stdio: the local one)."""
    token = get_access_token()
    return LOCAL_CALLER if token is None else caller_from_token(token)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: bytes
    caller: Caller


@dataclass
class PolicyTokenVerifier:
    """Accepts the tokens ``[[serve.tokens]]`` lists; each maps to its caller."""

    entries: tuple[_Entry, ...]
    audience: str | None = None
    problems: list[str] = field(default_factory=list)

    @classmethod
    def from_policy(
        cls,
        policy: Policy,
        *,
        environ: Mapping[str, str] | None = None,
        audience: str | None = None,
    ) -> PolicyTokenVerifier:
        """Read the token digests (and the env tokens, hashed at once) from the policy."""
        env = os.environ if environ is None else environ
        entries: list[_Entry] = []
        problems: list[str] = []
        for i, t in enumerate(policy.doc.serve.tokens):
            caller = Caller(t.name, t.tenant, tuple(t.roles), POLICY_ISSUER)
            if t.sha256 is not None:
                entries.append(_Entry(bytes.fromhex(t.sha256), caller))
                continue
            value = env.get(t.env or "")
            if not value:
                problems.append(
                    f"[[serve.tokens]] {i} ({t.name!r}): environment variable {t.env!r} is not "
                    "set, so this token is not accepted"
                )
                continue
            if len(value) < 16:
                raise PolicyError(
                    f"the token in ${t.env} for {t.name!r} is shorter than 16 characters",
                    source=policy.source,
                    where=f"serve.tokens[{i}].env",
                    fix='use a long random token, e.g. python -c "import secrets; '
                    'print(secrets.token_urlsafe(32))"',
                )
            entries.append(_Entry(_digest(value), caller))
        return cls(tuple(entries), audience, problems)

    @property
    def configured(self) -> bool:
        return bool(self.entries)

    async def verify_token(self, token: str) -> AccessToken | None:
        digest = _digest(token)
        found: Caller | None = None
        for e in self.entries:  # every entry compared, in constant time each
            if hmac.compare_digest(e.digest, digest) and found is None:
                found = e.caller
        if found is None:
            return None
        return AccessToken(
            token=digest.hex()[:16],  # never the token itself: nothing downstream needs it
            client_id=found.name,
            subject=found.name,
            scopes=list(found.roles),
            resource=self.audience,
            claims={"tenant": found.tenant, "iss": POLICY_ISSUER},
        )


@dataclass
class CurrentTokenVerifier:
    """The token verifier of whichever policy is serving now (tokens follow policy reloads)."""

    current: Callable[[], PolicyTokenVerifier]

    async def verify_token(self, token: str) -> AccessToken | None:
        return await self.current().verify_token(token)


class AuthAuditMiddleware:
    """ASGI middleware: every 401 the inner app sends is written as an audit ``decision``."""

    def __init__(self, app: ASGIApp, record: Callable[[dict[str, Any]], None]) -> None:
        self.app = app
        self.record = record

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start" and message.get("status") == 401:
                headers = {k.lower(): v for k, v in scope.get("headers", [])}
                auth = headers.get(b"authorization", b"")
                client = scope.get("client") or ("", 0)
                self.record(
                    {
                        "action": "unauthenticated",
                        "reason": "wrong bearer token" if auth else "no bearer token",
                        "remote": str(client[0]),
                        "path": str(scope.get("path", ""))[:200],
                    }
                )
            await send(message)

        await self.app(scope, receive, watch)
