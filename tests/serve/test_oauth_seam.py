"""The SDK's ``TokenVerifier`` seam: an operator's own verifier (an OAuth issuer) plugged into
``build_app``; a token issued for another audience is refused, claims map to the caller."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from mcp.server.auth.provider import AccessToken
from starlette.applications import Starlette

from bastion.serve import BastionServer, KernelHolder
from bastion.serve.http import build_app
from bastion.serve.readiness import Readiness

from .clients import http_client
from .conftest import policy_text
from .inthread import served_on_a_thread

AUDIENCE = "http://127.0.0.1/mcp"


class IssuerVerifier:
    """Stands in for an OAuth introspection: two known tokens, one for another audience."""

    async def verify_token(self, token: str) -> AccessToken | None:
        if token == "good-oauth-token":
            return AccessToken(
                token="opaque",
                client_id="app",
                subject="dora",
                scopes=["reader"],
                resource=AUDIENCE,
                claims={"tenant": "acme", "iss": "https://issuer.example"},
            )
        if token == "other-audience-token":
            return AccessToken(
                token="opaque", client_id="app", scopes=[], resource="https://elsewhere.example/mcp"
            )
        return None


@pytest.fixture
def oauth_server(pack: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("BASTION_LOAD_PLUGINS", "")
    monkeypatch.setenv("BASTION_TEST_STATE_KEY", "k" * 40)
    path = tmp_path / "bastion.toml"
    path.write_text(policy_text(tmp_path))
    holder = KernelHolder.from_args(str(path), [pack])
    bs = BastionServer(holder)

    def make(port: int) -> Starlette:
        return build_app(bs, Readiness(holder), host="127.0.0.1", port=port,
                         token_verifier=IssuerVerifier(), resource_url=AUDIENCE)  # fmt: skip

    try:
        with served_on_a_thread(make) as (base, _port, _app):
            yield base + "/mcp"
    finally:
        holder.close()


def test_an_issuers_token_maps_to_tenant_and_roles(oauth_server: str) -> None:
    async def names() -> set[str]:
        async with http_client(oauth_server, "good-oauth-token", "2026-07-28") as c:
            return {t.name for t in (await c.list_tools()).tools}

    got = anyio.run(names)
    assert "echo" in got and "admin_tool" not in got  # scopes -> [roles.reader]


@pytest.mark.parametrize("token", ["other-audience-token", "unknown-token"])
def test_a_token_for_another_audience_is_refused(oauth_server: str, token: str) -> None:
    r = httpx.post(
        oauth_server,
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers={
            "authorization": f"Bearer {token}",
            "accept": "application/json, text/event-stream",
        },
        timeout=10,
    )
    assert r.status_code == 401
