"""The circuit breaker ignores outcomes that are not the skill's doing: ``NOT_READY`` (the
sandbox still starting), ``CANCELLED`` and ``AUDIT_UNAVAILABLE`` neither count as failures nor
close a half-open breaker; a policy cannot list them in ``[breaker] codes``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bastion import (
    ErrorCode,
    ExecutionError,
    Kernel,
    PolicyError,
    hookimpl,
    load_policy,
    native_skill,
)

MODE = {"next": "ok"}


@native_skill(name="warming", version="1.0.0", description="W.", input_schema={"type": "object"})
def warming() -> str:
    mode = MODE["next"]
    if mode == "crash":
        raise ExecutionError(ErrorCode.SKILL_CRASHED, "crashed")
    if mode == "not_ready":
        raise ExecutionError(ErrorCode.NOT_READY, "still starting")
    return "ok"


class Skills:
    @hookimpl
    def bastion_skills(self) -> list[Any]:
        return [warming]


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_not_ready_neither_counts_nor_closes_a_probe(tmp_path: Path) -> None:
    clock = Clock()
    text = f'[audit]\npath = "{tmp_path / "a.jsonl"}"\n[breaker]\nfailures = 1\ncooldown_s = 10\n'
    with Kernel(load_policy(text=text), plugins=[Skills()], entry_points=False, clock=clock) as k:
        MODE["next"] = "not_ready"
        for _ in range(3):
            res = k.invoke("warming", {})
            assert res.error is not None and res.error.code == "NOT_READY" and res.error.retryable
        assert k.breaker_states()["warming"] == "closed"  # never counted as failures
        MODE["next"] = "crash"
        k.invoke("warming", {})
        assert k.breaker_states()["warming"] == "open"
        clock.now += 11
        MODE["next"] = "not_ready"
        assert k.invoke("warming", {}).error.code == "NOT_READY"  # type: ignore[union-attr]
        assert k.breaker_states()["warming"] == "half_open"  # the probe given back, not closed
        MODE["next"] = "ok"
        assert k.invoke("warming", {}).ok
        assert k.breaker_states()["warming"] == "closed"


@pytest.mark.parametrize("code", ["NOT_READY", "CANCELLED", "AUDIT_UNAVAILABLE"])
def test_the_policy_cannot_count_them(code: str) -> None:
    with pytest.raises(PolicyError, match="says nothing about the skill's health"):
        load_policy(text=f'[breaker]\ncodes = ["{code}"]\n')
