"""Remembered approvals: a granted approval is kept by its binding so the same call is not
asked again, in this process or (with a shared store) on every replica.

The binding (``guard.approval_binding``) already fixes the skill, version, exact arguments,
grants and tenant. In Redis the record is a sealed token bound to tenant + binding, so a store
writer without the deployment's seal keys cannot forge one.
"""

from __future__ import annotations

import threading
from typing import final

from ..logs import get_logger
from .handle import StateHandle
from .seal import SealError
from .unavailable import StoreUnavailable

__all__ = ["ApprovalMemory"]

log = get_logger("bastion.state")


@final
class ApprovalMemory:
    """``remembered`` / ``remember`` over the kernel's state backend; thread-safe."""

    def __init__(self, state: StateHandle) -> None:
        self._state = state
        self._local: set[str] = set()
        self._lock = threading.Lock()

    def _key(self, tenant: str, binding: str) -> str:
        assert self._state.store is not None
        return self._state.store.tenant_key(tenant, "approval", binding)

    def remembered(self, tenant: str, binding: str) -> bool:
        """Whether this exact call was approved before (False when the store cannot say)."""
        store = self._state.store
        if store is None:
            with self._lock:
                return binding in self._local
        try:
            token = store.get(self._key(tenant, binding))
        except StoreUnavailable:
            return False  # ask again rather than assume an approval
        if token is None:
            return False
        try:
            self._state.sealer.open(token, bind=f"approval\0{tenant}\0{binding}")
        except SealError as exc:
            log.warning("approval_record_refused", tenant=tenant, reason=str(exc))
            return False
        return True

    def remember(self, tenant: str, binding: str, approver: str | None) -> None:
        store = self._state.store
        if store is None:
            with self._lock:
                self._local.add(binding)
            return
        ttl = self._state.section.approval_ttl_s
        token = self._state.sealer.seal(
            {"approver": approver}, bind=f"approval\0{tenant}\0{binding}", ttl_s=ttl
        )
        try:
            store.put(self._key(tenant, binding), token, ttl)
        except StoreUnavailable as exc:
            log.warning("approval_not_shared", tenant=tenant, reason=exc.reason)
