"""Connecting the SDK's own client to a real ``bastion mcp`` or ``bastion serve``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from .conftest import stdio_params

__all__ = ["http_client", "stdio_client"]


@asynccontextmanager
async def http_client(url: str, token: str | None, mode: str, **kw: Any) -> AsyncIterator[Client]:
    """The SDK client over Streamable HTTP, with a bearer token when given."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=120.0)) as http,
        Client(
            streamable_http_client(url, http_client=http), mode=mode, cache=None, **kw
        ) as client,
    ):
        yield client


@asynccontextmanager
async def stdio_client(policy: Path, pack: Path, mode: str, **kw: Any) -> AsyncIterator[Client]:
    """The SDK client over stdio against a spawned ``bastion mcp``."""
    async with Client(stdio_params(policy, pack), mode=mode, cache=None, **kw) as client:
        yield client
