"""``/healthz`` and ``/readyz``: alive, and ready to run calls.

Ready means: the sandbox executors load and the skills are prepared (the Python runner built
and compiled, modules in the compile cache), the policy is loaded, and the audit log is
writable. Preparing runs in a background thread from start-up, so ``bastion serve`` answers at
once and ``/readyz`` says 503 until the sandbox is ready.
"""

from __future__ import annotations

import threading
from typing import Any

import structlog

from .holder import KernelHolder

__all__ = ["Readiness"]

log = structlog.get_logger("bastion.serve")


class Readiness:
    """Prepares the kernel's skills in the background and reports readiness."""

    def __init__(self, holder: KernelHolder) -> None:
        self.holder = holder
        self._prepared = threading.Event()
        self.problems: list[str] = []
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Begin preparing (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._prepare, name="bastion-ready", daemon=True)
            self._thread.start()

    def _prepare(self) -> None:
        try:
            with self.holder.use() as gen:
                self.problems = [p.message for p in gen.kernel.prepare()]
                gen.prepared.update(gen.catalog.names())
        except Exception as exc:
            self.problems = [f"{type(exc).__name__}: {str(exc)[:300]}"]
            log.exception("prepare_failed")
        finally:
            self._prepared.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._prepared.wait(timeout)

    def report(self) -> tuple[bool, dict[str, Any]]:
        """``(ready, details)`` for ``/readyz``."""
        with self.holder.use() as gen:
            health = gen.kernel.health()
        audit = health["audit"]
        checks = {
            "sandbox": bool(health["sandbox"]["ready"]) and self._prepared.is_set(),
            "policy": True,
            "audit": bool(audit["writable"]) or not audit["enabled"],
        }
        details: dict[str, Any] = {
            "ready": all(checks.values()),
            "checks": checks,
            "generation": self.holder.current.number,
            "preparing": not self._prepared.is_set(),
        }
        details["state"] = health.get("state")  # reported; a store outage is per-call policy
        if self.problems:
            details["prepare_problems"] = self.problems[:20]
        if self.holder.last_error:
            details["reload_refused"] = self.holder.last_error[:500]
        return details["ready"], details
