"""The bodies of ``bastion mcp`` and ``bastion serve`` (``cli.py`` only parses and calls them).

Exit status as for every command: 0 after a clean shutdown, 2 for a configuration error (a bad
policy, a missing state key, a non-loopback bind without a token), printed as one line with
its fix on stderr.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from bastion.errors import ConfigError

if TYPE_CHECKING:
    from bastion.kernel import Kernel

__all__ = ["cmd_mcp", "cmd_serve"]

EXIT_OK, EXIT_USAGE = 0, 2


def _server(args: argparse.Namespace) -> object:
    from .holder import KernelHolder
    from .server import BastionServer

    holder = KernelHolder.from_args(args.policy, [Path(p) for p in args.pack or ()])
    try:
        return BastionServer(holder)
    except BaseException:
        holder.close()
        raise


def cmd_mcp(args: argparse.Namespace) -> int:
    """Serve MCP on stdin/stdout until the client closes stdin."""
    from .server import BastionServer
    from .stdio import serve_stdio

    bs = _server(args)
    assert isinstance(bs, BastionServer)
    try:
        anyio.run(serve_stdio, bs)
    finally:
        bs.holder.close()
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve Streamable HTTP on ``--host``/``--port`` until interrupted."""
    from .auth import CurrentTokenVerifier, PolicyTokenVerifier
    from .http import build_app, is_loopback, serve_http
    from .readiness import Readiness
    from .server import BastionServer

    bs = _server(args)
    assert isinstance(bs, BastionServer)
    try:

        def tokens(kernel: Kernel) -> dict[str, Any]:
            verifier = PolicyTokenVerifier.from_policy(kernel.policy)
            for problem in verifier.problems:
                sys.stderr.write(f"bastion serve: {problem}\n")
            return {"tokens": verifier}

        bs.holder.set_attach(tokens)
        verifier = bs.holder.current.attachments["tokens"]
        if not is_loopback(args.host) and not verifier.configured:
            sys.stderr.write(
                f"bastion: refusing to serve on {args.host!r} without authentication: anyone "
                "who can reach it could run the granted skills\n"
                "Fix: add a [[serve.tokens]] entry to the policy (name, tenant, roles and "
                'sha256 = "<sha256 hex of the token>" or env = "VAR"; see docs/mcp.md), '
                "or bind --host 127.0.0.1\n"
            )
            return EXIT_USAGE
        family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Inherited by accepted connections: small SSE frames go out at once instead of
        # waiting ~40 ms for a delayed ACK (Nagle).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((args.host.strip("[]"), args.port))
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc})",
                fix="choose another --port, or stop what is using it",
            ) from None
        sock.listen(1024)
        port = sock.getsockname()[1]
        app = build_app(
            bs,
            Readiness(bs.holder),
            host=args.host,
            port=port,
            token_verifier=CurrentTokenVerifier(lambda: bs.holder.current.attachments["tokens"])
            if verifier.configured
            else None,
        )
        anyio.run(serve_http, app, sock)
    finally:
        bs.holder.close()
    return EXIT_OK
