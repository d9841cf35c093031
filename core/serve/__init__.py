"""Bastion as an MCP server: every granted skill an MCP tool, over stdio and Streamable HTTP.

A request flows ``transport (stdio.py | http.py) -> frame limits (limits.py) -> auth (auth.py)
-> MCP dispatch (server.py) -> tools/list (tools.py) | tools/call (calls.py, approvals.py)
-> the kernel (holder.py swaps it when the policy or packs change)``. ``bastion mcp`` and
``bastion serve`` are ``commands.py``; docs/mcp.md is the operator's guide.
"""

from __future__ import annotations

from .auth import LOCAL_CALLER, Caller, PolicyTokenVerifier
from .holder import KernelHolder
from .limits import MAX_FRAME_BYTES, MAX_FRAME_DEPTH, frame_problem
from .server import BastionServer
from .tools import ToolCatalog, annotations_for, tool_for

__all__ = [
    "LOCAL_CALLER",
    "MAX_FRAME_BYTES",
    "MAX_FRAME_DEPTH",
    "BastionServer",
    "Caller",
    "KernelHolder",
    "PolicyTokenVerifier",
    "ToolCatalog",
    "annotations_for",
    "frame_problem",
    "tool_for",
]
