"""``/healthz`` and ``/readyz``: alive, and ready to run calls.

Ready means what the kernel itself says (``Kernel.readiness()``: the sandbox engine can be
configured, the audit log accepts records) plus what serving adds: the skills are prepared
(the Python runner built and compiled, modules in the compile cache; this runs in a background
thread from start-up, so ``bastion serve`` answers at once) and the audit log is not failing
(records reach the file; ``[audit] on_failure = "continue"`` keeps a failing log from making the
server unready, as it keeps it from refusing calls). ``/readyz`` is 503 until then, with each
reason in ``reasons``, scrubbed of host paths like every message a client sees.
"""

from __future__ import annotations

import threading
from typing import Any

import structlog

from bastion.scrub import scrub_message

from .holder import Generation, KernelHolder

__all__ = ["Readiness"]

log = structlog.get_logger("bastion.serve")


def _scrubbed(text: str, gen: Generation) -> str:
    """``text`` without host paths (the audit path and any other absolute path) or secrets."""
    path = getattr(gen.kernel.audit, "path", None)
    return scrub_message(text, paths=[str(path)] if path is not None else [], limit=300)


def _audit_reason(gen: Generation, accepting: bool) -> str | None:
    """Why the audit log keeps the server unready, or None."""
    kernel = gen.kernel
    continue_on_failure = kernel.policy.doc.audit.on_failure == "continue"
    status = getattr(kernel.audit, "status", None)
    info: dict[str, Any] = status() if callable(status) else {}
    failing = bool(info.get("failing")) or info.get("writable") is False
    if accepting and (continue_on_failure or not failing):
        return None
    cause = info.get("last_error") or "writes to it fail"
    what = (
        "the audit log is refusing calls"
        if not accepting
        else "the audit log is failing (records are kept in memory and retried)"
    )
    return f"audit: {what}: {_scrubbed(str(cause), gen)}"


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
                self.problems = [_scrubbed(p.message, gen) for p in gen.kernel.prepare()]
                gen.prepared.update(gen.catalog.names())
        except Exception as exc:
            self.problems = [f"{type(exc).__name__}: {scrub_message(str(exc), limit=300)}"]
            log.exception("prepare_failed")
        finally:
            self._prepared.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._prepared.wait(timeout)

    def report(self) -> tuple[bool, dict[str, Any]]:
        """``(ready, details)`` for ``/readyz``: ``checks`` per component, ``reasons`` for each
        failing one (no host paths)."""
        with self.holder.use() as gen:
            kernel_ready = gen.kernel.readiness()
            reasons: list[str] = []
            if not kernel_ready["sandbox"]:
                reasons.append(
                    "sandbox: the WebAssembly engine cannot be configured (see 'bastion doctor')"
                )
            elif not self._prepared.is_set():
                reasons.append(
                    "sandbox: preparing the skills (building or loading the Python runner, "
                    "compiling modules into the cache)"
                )
            audit = _audit_reason(gen, kernel_ready["audit"])
            if audit is not None:
                reasons.append(audit)
            handle = gen.kernel.state
            if handle.store is not None:
                handle.store.ping()  # an outage (or a recovery) is seen now, not at a call
            state = handle.status()
            number = gen.number
        checks = {
            "sandbox": bool(kernel_ready["sandbox"]) and self._prepared.is_set(),
            "policy": True,  # the serving generation's policy loaded (a broken reload is kept out)
            "audit": audit is None,
        }
        details: dict[str, Any] = {
            "ready": all(checks.values()),
            "checks": checks,
            "reasons": reasons,
            "generation": number,
            "preparing": not self._prepared.is_set(),
        }
        details["state"] = state  # reported only: a store outage is per-call policy
        if self.problems:
            details["prepare_problems"] = self.problems[:20]
        if self.holder.last_error:
            with self.holder.use() as gen:
                details["reload_refused"] = _scrubbed(self.holder.last_error, gen)[:500]
        return details["ready"], details
