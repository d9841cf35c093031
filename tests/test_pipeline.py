"""Guardrails, tenants, rate limits, breakers, the result cache, health and metrics, through a
real kernel with native skills and injected clocks."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bastion import (
    ErrorCode,
    ExecutionError,
    GuardAction,
    GuardDecision,
    InvocationContext,
    Kernel,
    PolicyError,
    hookimpl,
    load_policy,
    native_skill,
)
from bastion.audit import read_audit
from tests.approvers import RecordingApprover

OBJ = {"type": "object"}
RUNS: Counter[str] = Counter()


@native_skill(
    name="calc",
    version="1.0.0",
    description="Adds; deterministic.",
    input_schema={"type": "object", "properties": {"a": {}, "b": {}}},
    deterministic=True,
)
def calc(a: int = 0, b: int = 0) -> dict[str, Any]:
    RUNS["calc"] += 1
    return {"sum": a + b}


@native_skill(name="echo", version="1.0.0", description="Echo.", input_schema=OBJ)
def echo(**kw: Any) -> dict[str, Any]:
    RUNS["echo"] += 1
    return kw


@native_skill(
    name="save_file",
    version="1.0.0",
    description="Writes to /files.",
    input_schema=OBJ,
    permissions={"filesystem": [{"path": "/files", "access": "write"}]},
)
def save_file(path: str = "/files/a.txt") -> str:
    return path


@native_skill(
    name="fetch_page",
    version="1.0.0",
    description="Fetches.",
    input_schema=OBJ,
    permissions={"network": ["https://api.example.com"]},
)
def fetch_page(url: str = "https://api.example.com/") -> str:
    return "page"


@native_skill(
    name="read_notes",
    version="1.0.0",
    description="Reads private notes.",
    input_schema=OBJ,
    permissions={"filesystem": [{"path": "/notes", "access": "read"}]},
)
def read_notes() -> str:
    return "notes"


@native_skill(
    name="post_secret",
    version="1.0.0",
    description="Network and a secret.",
    input_schema=OBJ,
    permissions={"network": ["https://api.example.com"], "secrets": ["API_KEY"]},
)
def post_secret() -> str:
    return "sent"


@native_skill(name="flaky", version="1.0.0", description="Fails on demand.", input_schema=OBJ)
def flaky(mode: str = "ok") -> str:
    if mode == "crash":
        raise ExecutionError(ErrorCode.SKILL_CRASHED, "the skill crashed")
    if mode == "error":
        raise ValueError("a domain error")
    return "fine"


ALL = [calc, echo, save_file, fetch_page, read_notes, post_secret, flaky]


class Skills:
    @hookimpl
    def bastion_skills(self) -> list[Any]:
        return ALL


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


BASE = """
[network]
allow = ["https://api.example.com"]
[secrets]
allow = ["API_KEY"]
[[mounts]]
guest = "/files"
host = "{files}"
access = "write"
[[mounts]]
guest = "/notes"
host = "{files}"
"""


@pytest.fixture
def make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("BASTION_LOAD_PLUGINS", "")
    (tmp_path / "files").mkdir()
    kernels: list[Kernel] = []

    def build(extra: str = "", *, plugins: tuple[Any, ...] = (), **kw: Any) -> Kernel:
        # Top-level keys (presets = ...) must come before the first table.
        lines = extra.splitlines(keepends=True)
        cut = next((i for i, ln in enumerate(lines) if ln.startswith("[")), len(lines))
        head, tail = "".join(lines[:cut]), "".join(lines[cut:])
        text = head + BASE.format(files=tmp_path / "files") + tail
        if "[audit]" not in text:
            text += f'\n[audit]\npath = "{tmp_path / "audit.jsonl"}"\n'
        k = Kernel(
            load_policy(text=text),
            plugins=[Skills(), *plugins],
            entry_points=False,
            environ={"API_KEY": "k-123456789"},
            **kw,
        )
        kernels.append(k)
        return k

    yield build
    for k in kernels:
        k.close()


def code(r: Any) -> str:
    return "ok" if r.ok else r.error.code


def records(tmp_path: Path, event: str = "invoke") -> list[dict[str, Any]]:
    return [r for r in read_audit(tmp_path / "audit.jsonl") if r["event"] == event]


# -- guardrails ---------------------------------------------------------------------------


def test_guardrail_kinds_patterns_and_args(make: Any, tmp_path: Path) -> None:
    k = make(
        """
[[guardrails]]
action = "approve"
reason = "writes to a mounted folder"
when = "write_mount"
args = { path = "re:^/files/private/" }
[[guardrails]]
action = "block"
reason = "no fetching from tests"
skills = ["fetch_*"]
args = { url = "https://api.example.com/admin" }
[[guardrails]]
action = "warn"
reason = "echo is noisy"
skills = ["ec?o"]
"""
    )
    assert code(k.invoke("save_file", {"path": "/files/public/a"})) == "ok"
    r = k.invoke("save_file", {"path": "/files/private/a"})
    assert code(r) == "APPROVAL_REQUIRED" and "writes to a mounted folder" in r.error.message
    assert code(k.invoke("save_file", {})) == "ok"  # argument absent: the rule does not match
    r = k.invoke("fetch_page", {"url": "https://api.example.com/admin"})
    assert code(r) == "DENIED" and "no fetching from tests" in r.error.message
    assert code(k.invoke("fetch_page", {"url": "https://api.example.com/x"})) == "ok"
    assert code(k.invoke("echo", {"x": 1})) == "ok"  # warn: runs
    k.audit.flush()
    warn = records(tmp_path, "decision")
    assert [(d["action"], d["rule"], d["skill"]) for d in warn] == [
        ("block", "guardrails[1]", "fetch_page"),
        ("warn", "guardrails[2]", "echo"),
    ]
    inv = records(tmp_path)
    assert inv[-1]["guard"] == {
        "action": "warn",
        "rule": "guardrails[2]",
        "reason": "echo is noisy",
    }


def test_policy_approval_is_bound_to_the_arguments(make: Any) -> None:
    k = make('[[guardrails]]\naction = "approve"\nreason = "writes"\nwhen = "write_mount"\n')
    yes, no = RecordingApprover(True), RecordingApprover(False)
    assert code(k.invoke("save_file", {"path": "/files/a"}, approver=yes)) == "ok"
    assert code(k.invoke("save_file", {"path": "/files/a"}, approver=no)) == "ok"  # remembered
    assert code(k.invoke("save_file", {"path": "/files/b"}, approver=no)) == "APPROVAL_REQUIRED"
    assert len(yes.asked) == 1 and len(no.asked) == 1
    assert yes.asked[0].reason == "writes" and yes.asked[0].mounts == ("/files (write)",)


def test_policy_rules_combine_with_hooks_strictest_wins(make: Any) -> None:
    class Hook:
        @hookimpl
        def bastion_guard(self, skill: Any, arguments: Any, grant: Any, context: Any) -> Any:
            if arguments.get("x") == "stop":
                return GuardDecision(GuardAction.BLOCK, "hook says no", rule="hook")
            return None

    k = make(
        '[[guardrails]]\naction = "approve"\nreason = "echo"\nskills = ["echo"]\n',
        plugins=(Hook(),),
    )
    assert code(k.invoke("echo", {"x": "go"})) == "APPROVAL_REQUIRED"
    r = k.invoke("echo", {"x": "stop"}, approver=RecordingApprover(True))
    assert code(r) == "DENIED" and "hook says no" in r.error.message


def test_packs_pattern_and_max_cost(make: Any) -> None:
    k = make(
        """
presets = ["cost-limits"]
[skills.calc]
cost_usd = 0.5
[skills.echo]
cost_usd = 2.0
[[guardrails]]
action = "block"
reason = "no embedded packs"
skills = ["flaky"]
packs = ["Sk*"]
"""
    )
    assert code(k.invoke("calc", {})) == "APPROVAL_REQUIRED"  # 0.5 > 0.10
    r = k.invoke("echo", {})
    assert code(r) == "DENIED" and "$1.00" in r.error.message
    assert code(k.invoke("fetch_page", {})) == "ok"  # no estimate: cost rules do not match
    assert code(k.invoke("flaky", {})) == "DENIED"  # pack "Skills" matches "Sk*"


def test_production_safety_preset(make: Any, tmp_path: Path) -> None:
    k = make('presets = ["production-safety"]\n')
    assert code(k.invoke("save_file", {})) == "APPROVAL_REQUIRED"
    assert code(k.invoke("fetch_page", {})) == "ok"
    assert code(k.invoke("post_secret", {})) == "ok"
    k.audit.flush()
    rules = [d["rule"] for d in records(tmp_path, "decision")]
    assert rules == ["preset:production-safety[1]", "preset:production-safety[1]"]


def test_lethal_trifecta_per_skill_and_per_session(make: Any) -> None:
    k = make('presets = ["lethal-trifecta"]\n')
    r = k.invoke("post_secret", {})
    assert code(r) == "APPROVAL_REQUIRED" and "lethal trifecta" in r.error.message
    assert code(k.invoke("save_file", {})) == "ok"  # a mount but no network
    s1 = InvocationContext(session="s1")
    assert code(k.invoke("read_notes", {}, context=s1)) == "ok"  # private data
    assert code(k.invoke("fetch_page", {}, context=InvocationContext(session="s1"))) == "ok"
    # Private data and untrusted content seen: the next outbound call needs approval.
    r = k.invoke(
        "fetch_page", {"url": "https://api.example.com/q"}, context=InvocationContext(session="s1")
    )
    assert code(r) == "APPROVAL_REQUIRED" and "session" in r.error.message
    # Another session, and calls without a session, are unaffected.
    assert code(k.invoke("fetch_page", {}, context=InvocationContext(session="s2"))) == "ok"
    assert code(k.invoke("fetch_page", {"url": "x"})) == "ok"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[[guardrails]]\naction = "deny"\nreason = "r"\n', "guardrails[0].action"),
        ('[[guardrails]]\naction = "warn"\nreason = "r"\nargs = { p = "re:[" }\n', "re:["),
        ('[[guardrails]]\naction = "warn"\nreason = "r"\nwhen = "disk"\n', "write_mount"),
        ('presets = ["safety"]\n', "lethal-trifecta"),
        ('[breaker]\ncodes = ["INVALID_INPUT"]\n', "cannot open a breaker"),
        ("[rate_limits]\ndefault = { rate = 0, burst = 1 }\n", "rate_limits.default.rate"),
        ("[tenants.acme]\nmax_concurent = 3\n", "max_concurent"),
    ],
)
def test_bad_policy_sections_are_refused_with_the_key(text: str, words: str) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(text=text)
    assert words in str(info.value)


# -- tenants, roles and quotas ------------------------------------------------------------


def test_tenant_and_role_allow_lists(make: Any, tmp_path: Path) -> None:
    k = make(
        """
[tenants.acme]
skills = ["calc", "fetch_*"]
[tenants."*"]
skills = ["echo"]
[roles.viewer]
skills = ["calc"]
"""
    )
    acme = InvocationContext(tenant="acme", caller="alice")
    assert code(k.invoke("calc", {}, context=acme)) == "ok"
    assert code(k.invoke("fetch_page", {}, context=acme)) == "ok"
    r = k.invoke("echo", {}, context=acme)
    assert code(r) == "DENIED" and "tenant 'acme'" in r.error.message
    assert "[tenants.acme] skills" in r.error.message
    other = InvocationContext(tenant="globex")
    assert code(k.invoke("echo", {}, context=other)) == "ok"
    r = k.invoke("calc", {}, context=other)
    assert code(r) == "DENIED" and '[tenants."*"]' in r.error.message
    viewer = InvocationContext(tenant="acme", roles=("viewer", "unknown-role"))
    assert code(k.invoke("calc", {}, context=viewer)) == "ok"
    r = k.invoke("fetch_page", {}, context=viewer)
    assert code(r) == "DENIED" and "[roles.viewer]" in r.error.message
    k.audit.flush()
    denied = [x for x in records(tmp_path) if x["outcome"] == "DENIED"]
    assert denied[0]["tenant"] == "acme" and denied[0]["caller"] == "alice"


def test_daily_quota_resets_at_utc_midnight(make: Any) -> None:
    wall = Clock(86_400 * 20_000 + 86_400 - 100)  # 100 s before a UTC midnight
    k = make("[tenants.acme]\ninvocations_per_day = 2\n", wall_clock=wall)
    acme = InvocationContext(tenant="acme")
    assert [code(k.invoke("echo", {}, context=acme)) for _ in range(2)] == ["ok", "ok"]
    r = k.invoke("echo", {}, context=acme)
    assert code(r) == "RATE_LIMITED" and r.error.retryable
    assert r.error.retry_after_s == pytest.approx(100)
    assert "used its 2 invocations" in r.error.message
    assert code(k.invoke("echo", {}, context=InvocationContext(tenant="other"))) == "ok"
    wall.now += 100
    assert code(k.invoke("echo", {}, context=acme)) == "ok"


def test_max_concurrent_is_released_in_finally(make: Any) -> None:
    import threading

    gate = threading.Event()
    started = threading.Event()

    @native_skill(name="slow", version="1.0.0", description="Waits.", input_schema=OBJ)
    def slow() -> str:
        started.set()
        gate.wait(10)
        return "done"

    class More:
        @hookimpl
        def bastion_skills(self) -> list[Any]:
            return [slow]

    k = make("[tenants.acme]\nmax_concurrent = 1\n", plugins=(More(),))
    acme = InvocationContext(tenant="acme")
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(k.invoke("slow", {}, context=acme)))
    t.start()
    assert started.wait(10)
    r = k.invoke("echo", {}, context=acme)
    assert code(r) == "RATE_LIMITED" and "max_concurrent 1" in r.error.message
    gate.set()
    t.join()
    assert code(out[0]) == "ok"
    assert code(k.invoke("flaky", {"mode": "crash"}, context=acme)) == "SKILL_CRASHED"
    assert code(k.invoke("echo", {}, context=acme)) == "ok"  # released after a failure too


# -- rate limits --------------------------------------------------------------------------


def test_rate_limits_per_skill_and_tenant(make: Any) -> None:
    clock = Clock()
    k = make(
        """
[rate_limits]
default = { rate = 1, burst = 2 }
[rate_limits.skills.calc]
rate = 10
burst = 5
[rate_limits.tenants.tiny]
rate = 0.5
burst = 1
""",
        clock=clock,
    )
    assert [code(k.invoke("echo", {"i": i})) for i in range(3)] == ["ok", "ok", "RATE_LIMITED"]
    r = k.invoke("echo", {"i": 9})
    assert r.error.retryable and r.error.retry_after_s == pytest.approx(1.0)
    assert "skill 'echo'" in r.error.message
    assert [code(k.invoke("calc", {"a": i})) for i in range(6)].count("ok") == 5
    tiny = InvocationContext(tenant="tiny")
    assert code(k.invoke("fetch_page", {}, context=tiny)) == "ok"
    r = k.invoke("fetch_page", {}, context=tiny)
    assert code(r) == "RATE_LIMITED" and r.error.retry_after_s == pytest.approx(2.0)
    assert "tenant 'tiny'" in r.error.message
    clock.now += 2
    assert code(k.invoke("fetch_page", {}, context=tiny)) == "ok"
    assert code(k.invoke("echo", {"i": 10})) == "ok"


# -- circuit breaker ----------------------------------------------------------------------


def test_breaker_opens_half_opens_and_closes(make: Any, tmp_path: Path) -> None:
    clock = Clock()
    k = make("[breaker]\nfailures = 3\nwindow_s = 60\ncooldown_s = 30\n", clock=clock)
    for _ in range(5):  # domain errors (SKILL_ERROR) do not count
        assert code(k.invoke("flaky", {"mode": "error"})) == "SKILL_ERROR"
    assert k.breaker_states()["flaky"] == "closed"
    for _ in range(3):
        assert code(k.invoke("flaky", {"mode": "crash"})) == "SKILL_CRASHED"
    r = k.invoke("flaky", {})
    assert code(r) == "CIRCUIT_OPEN" and r.error.retryable
    assert r.error.retry_after_s == pytest.approx(30)
    assert code(k.invoke("echo", {})) == "ok"  # per skill
    assert k.health()["open_breakers"] == ["flaky"]
    clock.now += 30
    assert k.breaker_states()["flaky"] == "half_open"
    assert code(k.invoke("flaky", {"mode": "crash"})) == "SKILL_CRASHED"  # the probe fails
    assert code(k.invoke("flaky", {})) == "CIRCUIT_OPEN"
    clock.now += 30
    assert code(k.invoke("flaky", {})) == "ok"  # the probe succeeds
    assert k.breaker_states()["flaky"] == "closed"
    k.audit.flush()
    opened = [x for x in records(tmp_path) if x["outcome"] == "CIRCUIT_OPEN"]
    assert opened and opened[0]["limit"] == "[breaker]"


# -- result cache -------------------------------------------------------------------------


def test_cache_hits_misses_ttl_and_tenant_isolation(make: Any, tmp_path: Path) -> None:
    clock = Clock()
    k = make("[cache]\nttl_s = 60\nmax_entries = 2\n", clock=clock)
    RUNS.clear()
    a, b = InvocationContext(tenant="a"), InvocationContext(tenant="b")
    r1 = k.invoke("calc", {"a": 1, "b": 2}, context=a)
    r1.output["sum"] = 999  # a caller changing its result cannot change the cache
    r2 = k.invoke("calc", {"b": 2, "a": 1}, context=a)  # same arguments, other key order
    assert r2.output == {"sum": 3} and RUNS["calc"] == 1
    assert k.invoke("calc", {"a": 1, "b": 2}, context=b).output == {"sum": 3}
    assert RUNS["calc"] == 2  # never shared across tenants
    k.invoke("echo", {"x": 1})
    k.invoke("echo", {"x": 1})
    assert RUNS["echo"] == 2  # not deterministic: never cached
    clock.now += 61
    k.invoke("calc", {"a": 1, "b": 2}, context=a)
    assert RUNS["calc"] == 3  # expired
    k.invoke("calc", {"a": 5}, context=a)  # LRU bound 2: evicts tenant b's entry
    k.invoke("calc", {"a": 1, "b": 2}, context=b)
    assert RUNS["calc"] == 5
    k.audit.flush()
    calc = [x["cache"] for x in records(tmp_path) if x["skill"] == "calc"]
    assert calc == ["miss", "hit", "miss", "miss", "miss", "miss"]
    assert k.health()["cache"]["hits"] == 1


def test_guard_hooks_apply_to_cached_answers(make: Any) -> None:
    """A hook that refuses one caller refuses them the cached result of another's call too."""

    class NoMallory:
        @hookimpl
        def bastion_guard(self, skill: Any, arguments: Any, grant: Any, context: Any) -> Any:
            if context.caller == "mallory":
                return GuardDecision(GuardAction.BLOCK, "mallory may not", rule="no-mallory")
            return None

    k = make("[cache]\nttl_s = 60\n", plugins=(NoMallory(),))
    RUNS.clear()
    alice = InvocationContext(tenant="t", caller="alice")
    mallory = InvocationContext(tenant="t", caller="mallory")
    assert k.invoke("calc", {"a": 2, "b": 3}, context=alice).output == {"sum": 5}
    r = k.invoke("calc", {"a": 2, "b": 3}, context=mallory)
    assert code(r) == "DENIED" and "mallory may not" in r.error.message
    assert k.invoke("calc", {"a": 2, "b": 3}, context=alice).output == {"sum": 5}
    assert RUNS["calc"] == 1  # alice's second call was a hit


def test_only_ok_results_are_cached(make: Any) -> None:
    @native_skill(
        name="det_fail", version="1.0.0", description="x", input_schema=OBJ, deterministic=True
    )
    def det_fail() -> None:
        RUNS["det_fail"] += 1
        raise ValueError("no")

    class More:
        @hookimpl
        def bastion_skills(self) -> list[Any]:
            return [det_fail]

    k = make("[cache]\n", plugins=(More(),))
    RUNS.clear()
    assert code(k.invoke("det_fail", {})) == code(k.invoke("det_fail", {})) == "SKILL_ERROR"
    assert RUNS["det_fail"] == 2


# -- health and metrics -------------------------------------------------------------------


def test_health_report(make: Any, tmp_path: Path) -> None:
    k = make("[breaker]\n[skills.echo]\nenabled = false\n")
    h = k.health()
    assert h["ok"] is True and h["sandbox"]["ready"] is True
    assert "calc" in h["skills"]["usable"] and h["skills"]["denied"] == ["echo"]
    assert h["packs"]["loaded"] == ["Skills"] and h["packs"]["failed"] == []
    audit = h["audit"]
    assert {k: audit[k] for k in ("enabled", "path", "writable", "failed_writes")} == {
        "enabled": True,
        "path": str(tmp_path / "audit.jsonl"),
        "writable": True,
        "failed_writes": 0,
    }
    assert audit["failing"] is False and audit["dropped"] == 0 and audit["refused_calls"] == 0
    assert h["ready"] == {"audit": True, "sandbox": True} == k.readiness()
    assert set(h["breakers"].values()) == {"closed"} and h["cache"] is None


def test_metrics_text_parses(make: Any) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    k = make("[breaker]\nfailures = 1\n")
    k.invoke("calc", {"a": 1})
    k.invoke("calc", {"a": "x"})  # SKILL_ERROR (str + int)
    k.invoke("flaky", {"mode": "crash"})
    k.invoke("nope", {})
    fams = {f.name: f for f in text_string_to_metric_families(k.metrics_text())}
    calls = {
        (s.labels["skill"], s.labels["outcome"]): s.value
        for s in fams["bastion_skill_calls"].samples
        if s.name.endswith("_total")
    }
    assert calls == {
        ("calc", "ok"): 1,
        ("calc", "SKILL_ERROR"): 1,
        ("flaky", "SKILL_CRASHED"): 1,
        ("_unknown", "NOT_FOUND"): 1,
    }
    counts = {
        s.labels["skill"]: s.value
        for s in fams["bastion_skill_duration_seconds"].samples
        if s.name.endswith("_count")
    }
    assert counts["calc"] == 2
    inf = [
        s.value
        for s in fams["bastion_skill_duration_seconds"].samples
        if s.name.endswith("_bucket") and s.labels == {"skill": "calc", "le": "+Inf"}
    ]
    assert inf == [2]
    states = {s.labels["skill"]: s.value for s in fams["bastion_skill_breaker_state"].samples}
    assert states["flaky"] == 2 and states["calc"] == 0


# -- load ---------------------------------------------------------------------------------


def test_ten_thousand_concurrent_invocations_one_audit_record_each(
    make: Any, tmp_path: Path
) -> None:
    k = make("[kernel]\nmax_workers = 16\n")
    rng = random.Random(7)
    plan = [
        ("flaky", {"mode": "error"}) if rng.random() < 0.1 else ("echo", {"i": i})
        for i in range(10_000)
    ]

    async def main() -> list[Any]:
        sem = asyncio.Semaphore(16)

        async def one(name: str, args: dict[str, Any]) -> Any:
            async with sem:
                return await k.ainvoke(name, args)

        return await asyncio.gather(*(one(n, a) for n, a in plan))

    results = asyncio.run(main())
    failing = sum(1 for n, _ in plan if n == "flaky")
    assert sum(1 for r in results if not r.ok) == failing
    assert all(r.error.code == "SKILL_ERROR" for r in results if not r.ok)
    k.audit.flush()
    ids = Counter(r["invocation_id"] for r in records(tmp_path))
    assert len(ids) == 10_000 and set(ids.values()) == {1}
    assert set(ids) == {r.invocation_id for r in results}
