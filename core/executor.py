"""The executor seam: what the kernel hands an executor, and what an executor must do.

An executor runs one kind of skill (``runtime`` in ``skill.toml``): ``wasm``, ``component``,
``python`` or ``native``. Executors are registered through the ``bastion_executors`` hook.
The kernel has already reviewed, granted, validated and guarded the call; the executor only
runs it inside the request's ``caps`` and ``limits`` and before ``deadline``.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .httpfixtures import HttpFixtures
    from .netrule import NetRule

__all__ = [
    "AuditSink",
    "Capabilities",
    "ExecutionRequest",
    "Executor",
    "IPNetwork",
    "JSONValue",
    "Limits",
    "Mount",
]

JSONValue = Any
"""A value made of dict, list, str, int, float, bool and None."""

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

AuditSink = Callable[[str, Mapping[str, Any]], None]
"""``audit(event_kind, fields)``: records one audit event (e.g. ``"http"`` per request)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Effective limits of one invocation, already capped by the policy."""

    timeout_ms: int = 10_000
    memory_mb: int = 128
    output_kb: int = 256

    @property
    def output_bytes(self) -> int:
        return self.output_kb * 1024

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Mount:
    """A granted mount: ``guest`` path seen by the skill, ``host`` directory, writability."""

    guest: str
    host: Path
    writable: bool = False


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the policy granted one skill; nothing outside this is reachable."""

    network: tuple[NetRule, ...] = ()
    private_allow: tuple[IPNetwork, ...] = ()
    """Addresses that may be reached although loopback/private/link-local/metadata."""
    mounts: tuple[Mount, ...] = ()
    secrets: Mapping[str, str] = field(default_factory=dict)
    """Granted secret name -> value (read from the host environment at grant time)."""
    config: Mapping[str, Any] = field(default_factory=dict)
    """The skill's settings (``[config]`` defaults overlaid by the policy's
    ``[skills.NAME.config]``), read in the guest with ``bastion_sdk.config(key)``."""
    http_stub: HttpFixtures | None = None
    """When set (the conformance kit, unless ``--live``), the skill's HTTP never leaves the
    host: the recording stub answers every granted request from these fixtures."""


@dataclass(frozen=True, slots=True)
class ExecutionRequest:
    """One call of one skill, as the kernel hands it to an executor."""

    skill: str
    version: str
    runtime: str
    entry: Path
    """Absolute path of the skill's entry file (``.wasm``, ``.py``); for native skills, unused."""
    folder: Path
    input: JSONValue
    input_json: str
    caps: Capabilities
    limits: Limits
    deadline: float
    """``time.monotonic()`` value by which the call must have stopped."""
    invocation_id: str
    logger: Any
    """A structlog logger bound with skill, pack and invocation id."""
    audit: AuditSink
    native: Callable[..., Any] | None = None
    """The Python callable of a native skill (trusted plugins only)."""
    cancel: threading.Event | None = None
    """Set by the kernel when the caller gave up on the call (``ainvoke`` cancelled, an MCP
    cancel notification, a disconnect): the executor stops the guest as soon as it can and
    raises ``ExecutionError(CANCELLED)``. ``None`` when the caller cannot cancel."""


@runtime_checkable
class Executor(Protocol):
    """Runs skills of one ``runtime``.

    ``execute`` returns the skill's output: ``bytes`` holding JSON text as the skill wrote it
    (sandboxed executors; the kernel decodes, parses and sanitizes it), or a JSON-like Python
    value (native skills). Failures raise ``ExecutionError`` with a stable code and a public
    message; anything else raised is reported as ``INTERNAL`` with the detail kept out of sight.
    """

    runtime: str

    def prepare(self, entry: Path) -> None:
        """Check and warm a skill's entry ahead of the first call (e.g. compile and cache)."""
        ...

    def execute(self, request: ExecutionRequest) -> bytes | JSONValue:
        """Run one call within ``request.caps``, ``request.limits`` and ``request.deadline``."""
        ...

    def close(self) -> None:
        """Release threads and caches held by this executor."""
        ...
