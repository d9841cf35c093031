"""The invocation pipeline with native skills: every outcome is a ToolResult with a stable code."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bastion import (
    GuardAction,
    GuardDecision,
    InvocationContext,
    Kernel,
    hookimpl,
    load_policy,
    native_skill,
)
from bastion.audit import read_audit
from tests.approvers import RecordingApprover

OBJ = {"type": "object"}


@native_skill(
    name="echo",
    version="1.0.0",
    description="Echo the input back.",
    input_schema={
        "type": "object",
        "properties": {"text": {"type": "string"}, "n": {"type": "integer", "minimum": 0}},
        "required": ["text"],
        "additionalProperties": False,
    },
)
def echo(text: str, n: int = 1) -> dict[str, Any]:
    return {"text": text * n}


@native_skill(name="boom", version="1.0.0", description="Always fails.", input_schema=OBJ)
def boom() -> None:
    raise ValueError("kaput in /home/someone/secret/path.py")


@native_skill(
    name="sleepy", version="1.0.0", description="Sleeps.", input_schema=OBJ, timeout_ms=100
)
def sleepy(seconds: float = 5) -> str:
    time.sleep(seconds)
    return "woke"


@native_skill(
    name="leaky",
    version="1.0.0",
    description="Returns nasty output.",
    input_schema=OBJ,
    output_schema={"type": "object", "required": ["ok"]},
    permissions={"secrets": ["DEMO_TOKEN"]},
)
def leaky(kind: str = "ansi") -> Any:
    if kind == "ansi":
        return {"ok": "\x1b[31mred\x1b[0m\x07 and \x00 nul"}
    if kind == "schema":
        return {"nope": 1}
    if kind == "deep":
        v: Any = []
        for _ in range(10_000):
            v = [v]
        return {"ok": v}
    if kind == "cycle":
        d: dict[str, Any] = {"ok": 1}
        d["self"] = d
        return d
    if kind == "secret":
        import os

        return {"ok": "key=" + os.environ["DEMO_TOKEN"]}
    return {"ok": object()}


class Skills:
    @hookimpl
    def bastion_skills(self) -> list[Any]:
        return [echo, boom, sleepy, leaky]


class Approve:
    """A guardrail plugin: calls with text 'danger' need approval, 'forbidden' is blocked."""

    @hookimpl
    def bastion_guard(self, skill: Any, arguments: Any, grant: Any, context: Any) -> Any:
        if arguments.get("text") == "danger":
            return GuardDecision(GuardAction.APPROVE, "dangerous text", rule="test.approve")
        if arguments.get("text") == "forbidden":
            return GuardDecision(GuardAction.BLOCK, "forbidden text", rule="test.block")
        return None


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("BASTION_LOAD_PLUGINS", "")
    monkeypatch.setenv("DEMO_TOKEN", "tok-7d1e9c0a5b")
    pol = load_policy(
        text=f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n[secrets]\nallow = ["DEMO_TOKEN"]\n'
    )
    k = Kernel(pol, plugins=[Skills(), Approve()])
    yield k
    k.close()


def test_ok(kernel: Kernel) -> None:
    r = kernel.invoke("echo", {"text": "ab", "n": 2})
    assert r.ok and r.output == {"text": "abab"} and r.error is None
    assert r.to_dict()["error"] is None and r.duration_ms >= 0


def test_tools_lists_only_usable_skills(kernel: Kernel) -> None:
    names = {t.name for t in kernel.tools()}
    assert names == {"echo", "boom", "sleepy", "leaky"}
    echo_tool = next(t for t in kernel.tools() if t.name == "echo")
    assert echo_tool.input_schema["required"] == ["text"]


def test_not_found_suggests(kernel: Kernel) -> None:
    r = kernel.invoke("ecko", {})
    assert not r.ok and r.error is not None
    assert r.error.code == "NOT_FOUND" and "'echo'" in r.error.message


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ({}, "input: 'text' is a required property"),
        ({"text": 3}, "input.text: 3 is not of type 'string'"),
        ({"text": "a", "n": -1}, "input.n: -1 is less than the minimum of 0"),
        ({"text": "a", "x": 1}, "Additional properties are not allowed"),
        ([1, 2], "input must be a JSON object"),
        ("not json", "not valid JSON"),
    ],
)
def test_invalid_input_names_the_field(kernel: Kernel, args: Any, words: str) -> None:
    r = kernel.invoke("echo", args)
    assert r.error is not None and r.error.code == "INVALID_INPUT"
    assert words in r.error.message
    assert not r.error.retryable


def test_deeply_nested_input_is_refused_not_crashing(kernel: Kernel) -> None:
    deep = "[" * 200_000 + "]" * 200_000
    r = kernel.invoke("echo", '{"text": "a", "n": ' + deep + "}")
    assert r.error is not None and r.error.code == "INVALID_INPUT"
    v: Any = "x"
    for _ in range(5000):
        v = {"a": v}
    r = kernel.invoke("echo", {"text": v})
    assert r.error is not None and r.error.code == "INVALID_INPUT"


def test_skill_error_is_scrubbed(kernel: Kernel) -> None:
    r = kernel.invoke("boom", {})
    assert r.error is not None and r.error.code == "SKILL_ERROR"
    assert "ValueError" in r.error.message and "kaput" in r.error.message
    assert "/home/someone" not in r.error.message


def test_native_timeout(kernel: Kernel) -> None:
    r = kernel.invoke("sleepy", {"seconds": 3})
    assert r.error is not None and r.error.code == "TIMEOUT" and r.error.retryable


def test_output_is_sanitized_and_checked(kernel: Kernel) -> None:
    r = kernel.invoke("leaky", {"kind": "ansi"})
    assert r.ok and r.output == {"ok": "red and  nul"}
    r = kernel.invoke("leaky", {"kind": "schema"})
    assert r.error is not None and r.error.code == "INVALID_OUTPUT"
    assert "'ok' is a required property" in r.error.message
    for kind in ("deep", "cycle", "object"):
        r = kernel.invoke("leaky", {"kind": kind})
        assert r.error is not None and r.error.code == "INVALID_OUTPUT", kind


def test_denied_skill_is_not_offered_and_not_run(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("BASTION_LOAD_PLUGINS", "")
    pol = load_policy(
        text=f'[audit]\npath = "{tmp_path / "a.jsonl"}"\n[skills.echo]\nenabled = false\n'
    )
    with Kernel(pol, plugins=[Skills()]) as k:
        assert "echo" not in {t.name for t in k.tools()}
        r = k.invoke("echo", {"text": "a"})
        assert r.error is not None and r.error.code == "DENIED"
        assert "disabled" in r.error.message and str(tmp_path) not in r.error.message


def test_guard_block_and_approval_binding(kernel: Kernel) -> None:
    r = kernel.invoke("echo", {"text": "forbidden"})
    assert r.error is not None and r.error.code == "DENIED" and "forbidden text" in r.error.message
    r = kernel.invoke("echo", {"text": "danger"})
    assert r.error is not None and r.error.code == "APPROVAL_REQUIRED"
    no = RecordingApprover(False)
    r = kernel.invoke("echo", {"text": "danger"}, approver=no)
    assert r.error is not None and r.error.code == "APPROVAL_REQUIRED" and len(no.asked) == 1
    yes = RecordingApprover(True)
    r = kernel.invoke("echo", {"text": "danger"}, approver=yes)
    assert r.ok and len(yes.asked) == 1
    # Remembered for the same exact call; a different argument needs a new approval.
    r = kernel.invoke("echo", {"text": "danger"}, approver=no)
    assert r.ok and len(no.asked) == 1
    r = kernel.invoke("echo", {"text": "danger", "n": 2}, approver=no)
    assert r.error is not None and r.error.code == "APPROVAL_REQUIRED" and len(no.asked) == 2
    assert yes.asked[0].binding != no.asked[1].binding
    # Remembered approvals are per tenant: another tenant's identical call is asked again.
    other = RecordingApprover(False)
    r = kernel.invoke(
        "echo", {"text": "danger"}, approver=other, context=InvocationContext(tenant="acme")
    )
    assert r.error is not None and r.error.code == "APPROVAL_REQUIRED" and len(other.asked) == 1


def test_audit_has_one_record_per_invocation_without_raw_arguments(
    kernel: Kernel, tmp_path: Path
) -> None:
    kernel.invoke("echo", {"text": "very-private-argument"})
    kernel.invoke("nope", {})
    kernel.invoke("boom", {}, context=InvocationContext(tenant="acme", caller="u1"))
    kernel.audit.flush()
    recs = [r for r in read_audit(tmp_path / "audit.jsonl") if r["event"] == "invoke"]
    assert [r["outcome"] for r in recs] == ["ok", "NOT_FOUND", "SKILL_ERROR"]
    assert recs[2]["tenant"] == "acme" and recs[2]["caller"] == "u1"
    assert "args_sha256" in recs[0]
    text = (tmp_path / "audit.jsonl").read_text()
    assert "very-private-argument" not in text


def test_granted_secret_echoed_in_output_is_redacted(kernel: Kernel) -> None:
    r = kernel.invoke("leaky", {"kind": "secret"})
    assert r.ok
    assert "tok-7d1e9c0a5b" not in json.dumps(r.output)
    assert "DEMO_TOKEN" in r.output["ok"]


def test_ainvoke_runs_in_parallel_without_blocking_the_loop(kernel: Kernel) -> None:
    async def main() -> list[Any]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        t = asyncio.create_task(ticker())
        results = await asyncio.gather(
            *(kernel.ainvoke("echo", {"text": str(i)}) for i in range(20))
        )
        t.cancel()
        assert ticks > 0
        return results

    results = asyncio.run(main())
    assert [r.output["text"] for r in results] == [str(i) for i in range(20)]


def test_kernel_survives_concurrent_hostile_and_good_calls(kernel: Kernel) -> None:
    out: list[Any] = []
    lock = threading.Lock()

    def call(i: int) -> None:
        name, args = [
            ("echo", {"text": str(i)}),
            ("boom", {}),
            ("leaky", {"kind": "deep"}),
            ("echo", {"text": 1}),
        ][i % 4]
        r = kernel.invoke(name, args)
        with lock:
            out.append((i, r))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = {i: (r.output if r.ok else r.error.code) for i, r in out}
    for i, v in codes.items():
        assert v == [{"text": str(i)}, "SKILL_ERROR", "INVALID_OUTPUT", "INVALID_INPUT"][i % 4]
    assert kernel.invoke("echo", {"text": "still"}).output == {"text": "still"}


def test_envelope_is_json(kernel: Kernel) -> None:
    r = kernel.invoke("boom", {})
    env = json.loads(json.dumps(r.to_dict()))
    assert set(env) == {"ok", "output", "error", "duration_ms"}
    assert set(env["error"]) == {"code", "message", "retryable"}
