"""What crosses the pipe for one call: the request as granted, and the outcome as bytes.

The kernel sends only what the skill is granted (its mounts, network rules, private-address
allowances, the secret values it may see, its limits and deadline); the worker rebuilds an
``ExecutionRequest`` from that and nothing else. The outcome is the raw output bytes, or an
error's code, public message and detail: the kernel decodes, sanitizes and audits as for an
in-process call.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from bastion.errors import ErrorCode, ExecutionError
from bastion.executor import Capabilities, ExecutionRequest, Limits, Mount
from bastion.httpfixtures import HttpFixtures
from bastion.netrule import NetRule

from ..cache import CacheMissError

__all__ = ["IDLE_PHASES", "decode_error", "encode_call", "encode_error", "request_from_call"]

IDLE_PHASES: tuple[str, ...] = ("rebuild", "execute", "answer", "drop", "prewarm")
"""What the worker's call-loop thread spent CPU on for one call, in the nanoseconds its *idle*
frame reports (``cpu_ns``, in this order): rebuilding the request (and its call logger), the
executor's ``execute``, encoding and sending the answer, dropping the used store (0 when the
dropper thread does it), and prewarming the next instance. What the thread spent besides
(waiting for and reading the next frame, sending *idle*) is its total less these."""

_PATHS: dict[str, Path] = {}
"""Entry and folder strings already made ``Path`` (~5 us each): a worker serves few skills.
Paths only, never a grant's values; cleared when full."""
_MAX_PATHS = 256


def _path(text: str) -> Path:
    path = _PATHS.get(text)
    if path is None:
        if len(_PATHS) >= _MAX_PATHS:
            _PATHS.clear()
        path = _PATHS[text] = Path(text)
    return path


def encode_call(call_id: int, request: ExecutionRequest, deadline: float) -> dict[str, Any]:
    """The call header for ``request`` (the input JSON travels as the frame's blob)."""
    caps = request.caps
    return {
        "t": "call",
        "id": call_id,
        "runtime": request.runtime,
        "skill": request.skill,
        "version": request.version,
        "entry": str(request.entry),
        "folder": str(request.folder),
        "invocation_id": request.invocation_id,
        "deadline": deadline,
        "limits": [request.limits.timeout_ms, request.limits.memory_mb, request.limits.output_kb],
        "mounts": [[m.guest, str(m.host), m.writable] for m in caps.mounts],
        "network": [[r.scheme, r.host, r.port, r.wildcard, r.text] for r in caps.network],
        "private_allow": [str(n) for n in caps.private_allow],
        "secrets": dict(caps.secrets),
        "config": dict(caps.config),
        "http_stub": None if caps.http_stub is None else caps.http_stub.to_wire(),
    }


def request_from_call(
    header: dict[str, Any], input_json: str, *, logger: Any, audit: Any
) -> ExecutionRequest:
    """Rebuild the ``ExecutionRequest`` a worker runs (raises ``KeyError``/``TypeError`` if bad)."""
    timeout_ms, memory_mb, output_kb = header["limits"]
    stub = header.get("http_stub")  # the kit's recording stub: the worker makes no request
    network, private, mounts = header["network"], header["private_allow"], header["mounts"]
    secrets, config = dict(header["secrets"]), dict(header.get("config") or {})
    if network or private or mounts or secrets or config or stub is not None:
        caps = Capabilities(
            network=tuple(
                NetRule(str(s), str(h), int(p), bool(w), str(t)) for s, h, p, w, t in network
            ),
            private_allow=tuple(ipaddress.ip_network(str(n)) for n in private),
            mounts=tuple(Mount(str(g), Path(h), bool(w)) for g, h, w in mounts),
            secrets={str(k): str(v) for k, v in secrets.items()},
            config={str(k): v for k, v in config.items()},
            http_stub=None if stub is None else HttpFixtures.from_wire(stub),
        )
    else:  # no network, mounts, secrets or settings: nothing to rebuild
        caps = Capabilities()
    return ExecutionRequest(
        skill=str(header["skill"]),
        version=str(header["version"]),
        runtime=str(header["runtime"]),
        entry=_path(str(header["entry"])),
        folder=_path(str(header["folder"])),
        input=None,
        input_json=input_json,
        caps=caps,
        limits=Limits(
            timeout_ms=int(timeout_ms), memory_mb=int(memory_mb), output_kb=int(output_kb)
        ),
        deadline=float(header["deadline"]),
        invocation_id=str(header["invocation_id"]),
        logger=logger,
        audit=audit,
    )


def encode_error(call_id: int, exc: ExecutionError) -> dict[str, Any]:
    """The error header for a failed call (a cache miss says so: the kernel repairs it)."""
    head: dict[str, Any] = {
        "t": "error",
        "id": call_id,
        "code": str(exc.error_code),
        "message": exc.message,
        "detail": exc.detail,
        "retry_after_s": exc.retry_after_s,
    }
    if isinstance(exc, CacheMissError):
        head["miss"] = [exc.kind, exc.key, exc.reason]
    return head


def decode_error(header: dict[str, Any]) -> ExecutionError:
    """The ``ExecutionError`` a worker reported; an unknown code is ``INTERNAL``."""
    try:
        code = ErrorCode(str(header.get("code")))
    except ValueError:
        code = ErrorCode.INTERNAL
    detail = header.get("detail")
    retry = header.get("retry_after_s")
    miss = header.get("miss")
    if isinstance(miss, list) and len(miss) == 3:
        return CacheMissError(*(str(x)[:2000] for x in miss))
    return ExecutionError(
        code,
        str(header.get("message") or "the skill failed")[:4000],
        detail=str(detail)[:16000] if detail is not None else None,
        retry_after_s=float(retry) if isinstance(retry, (int, float)) else None,
    )
