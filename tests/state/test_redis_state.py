"""Shared state in a real Redis: limits, quotas, leases, breakers, cache and approvals hold
across kernels (replicas) sharing one store, and an outage gives the documented behaviour."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion import Kernel, hookimpl, load_policy, native_skill
from bastion.audit import read_audit
from bastion.result import InvocationContext
from bastion.state import StateSection, open_state
from tests.approvers import RecordingApprover
from tests.state.redisserver import RedisServer

OBJ: dict[str, Any] = {"type": "object"}
GATE = threading.Event()
RUNNING: list[int] = [0]
PEAK: list[int] = [0]
LOCK = threading.Lock()


@native_skill(name="echo", version="1.0.0", description="Echo.", input_schema=OBJ)
def echo(**kw: Any) -> Any:
    return kw


@native_skill(
    name="same", version="1.0.0", description="Pure.", input_schema=OBJ, deterministic=True
)
def same(n: int = 0) -> Any:
    with LOCK:
        RUNNING[0] += 1  # counts real executions (a cache hit does not run)
    return {"n": n, "runs": RUNNING[0]}


@native_skill(name="crashy", version="1.0.0", description="Crashes.", input_schema=OBJ)
def crashy() -> Any:
    raise MemoryError("simulated crash")


@native_skill(name="hold", version="1.0.0", description="Waits for the gate.", input_schema=OBJ)
def hold() -> Any:
    with LOCK:
        RUNNING[0] += 1
        PEAK[0] = max(PEAK[0], RUNNING[0])
    try:
        GATE.wait(30)
    finally:
        with LOCK:
            RUNNING[0] -= 1
    return "done"


class Skills:
    @hookimpl
    def bastion_skills(self) -> list[Any]:
        return [echo, same, crashy, hold]


SEAL_ENV = {"SEAL_A": "a" * 40, "SEAL_B": "b" * 40}


@pytest.fixture
def replicas(tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Kernels in this process sharing ``redis_server``: each one a replica."""
    monkeypatch.setenv("BASTION_LOAD_PLUGINS", "")
    made: list[Kernel] = []

    def make(extra: str = "", *, node: str = "n1", seal: str = "SEAL_A", **kw: Any) -> Kernel:
        text = textwrap.dedent(extra) + textwrap.dedent(f"""
            [state]
            url = "{redis_server.url}"
            namespace = "test"
            node_id = "{node}"
            seal_keys_env = ["{seal}"]
            timeout_ms = 300
            retry_s = 0.2
            lease_ttl_s = 2
            [audit]
            path = "{tmp_path / (node + ".jsonl")}"
            """)
        k = Kernel(
            load_policy(text=text),
            plugins=[Skills()],
            entry_points=False,
            environ=SEAL_ENV,
            **kw,
        )
        made.append(k)
        return k

    yield make
    GATE.set()
    for k in made:
        k.close()


def code(r: Any) -> str:
    return "ok" if r.ok else r.error.code


def ctx(tenant: str = "acme") -> InvocationContext:
    return InvocationContext(tenant=tenant)


class TestRateLimits:
    def test_burst_holds_across_replicas(self, replicas: Any) -> None:
        policy = "[rate_limits.skills.echo]\nrate = 0.001\nburst = 3\n"
        a, b, c = replicas(policy, node="a"), replicas(policy, node="b"), replicas(policy, node="c")
        got = [code(k.invoke("echo", {}, context=ctx())) for k in (a, b, c, a, b, c)]
        assert got.count("ok") == 3 and got.count("RATE_LIMITED") == 3
        assert got[:3] == ["ok"] * 3

    def test_tenant_buckets_never_share_a_key(self, replicas: Any) -> None:
        a = replicas("[rate_limits.tenant_default]\nrate = 0.001\nburst = 1\n")
        # Names that a naive "ns:t:<tenant>:bucket" join would make collide.
        names = ["x", "x:bucket", "x%3Abucket", "x:t:x", "*", ""]
        assert [code(a.invoke("echo", {}, context=ctx(n))) for n in names] == ["ok"] * 6
        assert [code(a.invoke("echo", {}, context=ctx(n))) for n in names] == ["RATE_LIMITED"] * 6


class TestQuotas:
    def test_daily_quota_admits_exactly_n_across_replicas(self, replicas: Any) -> None:
        policy = '[tenants."*"]\ninvocations_per_day = 5\n'
        ks = [replicas(policy, node=f"r{i}") for i in range(3)]
        results: list[str] = []
        lock = threading.Lock()

        def worker(k: Kernel) -> None:
            for _ in range(4):
                r = code(k.invoke("echo", {}, context=ctx()))
                with lock:
                    results.append(r)

        threads = [threading.Thread(target=worker, args=(k,)) for k in ks for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results.count("ok") == 5 and results.count("RATE_LIMITED") == 19
        other = code(ks[0].invoke("echo", {}, context=ctx("globex")))
        assert other == "ok", "another tenant has its own count"

    def test_concurrency_limit_holds_across_replicas(self, replicas: Any) -> None:
        GATE.clear()
        PEAK[0] = 0
        policy = '[tenants."*"]\nmax_concurrent = 2\n[kernel]\nmax_workers = 8\n'
        a, b = replicas(policy, node="a"), replicas(policy, node="b")
        futs = [k.ainvoke("hold", {}, context=ctx()) for k in (a, b, a, b, a)]
        import asyncio

        async def run() -> list[Any]:
            tasks = [asyncio.ensure_future(f) for f in futs]
            await asyncio.sleep(1.0)
            GATE.set()
            return list(await asyncio.gather(*tasks))

        out = [code(r) for r in asyncio.run(run())]
        assert out.count("ok") == 2 and out.count("RATE_LIMITED") == 3
        assert PEAK[0] == 2
        assert a._tenants is not None and a._tenants.running("acme") == 0

    def test_a_dead_replicas_leases_expire(
        self, replicas: Any, redis_server: RedisServer, tmp_path: Path
    ) -> None:
        """A process that holds both slots is SIGKILLed: its leases stop being renewed and the
        slots free themselves after lease_ttl_s; until then the tenant is refused."""
        script = textwrap.dedent(f"""
            import sys, time
            from bastion.state import StateSection, open_state
            sec = StateSection(url="{redis_server.url}", namespace="test", lease_ttl_s=2)
            h = open_state(sec, {{}})
            for i in range(2):
                assert h.store.admit("acme", None, 2, f"dead-{{i}}")[0] == 0
            print("held", flush=True)
            time.sleep(60)
            """)
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
            k = replicas('[tenants."*"]\nmax_concurrent = 2\n')
            time.sleep(2.5)  # longer than the ttl: the live holder has renewed its leases
            assert code(k.invoke("echo", {}, context=ctx())) == "RATE_LIMITED"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            deadline = time.monotonic() + 10
            while code(k.invoke("echo", {}, context=ctx())) != "ok":
                assert time.monotonic() < deadline, "the dead replica's leases never expired"
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


class TestBreaker:
    POLICY = "[breaker]\nfailures = 2\nwindow_s = 60\ncooldown_s = 1\n"

    def test_opened_on_one_replica_refuses_on_all(self, replicas: Any) -> None:
        a, b = replicas(self.POLICY, node="a"), replicas(self.POLICY, node="b")
        assert code(a.invoke("crashy", {})) == "MEMORY_LIMIT"
        assert code(b.invoke("crashy", {})) == "MEMORY_LIMIT"
        assert code(a.invoke("crashy", {})) == "CIRCUIT_OPEN"
        assert code(b.invoke("crashy", {})) == "CIRCUIT_OPEN"
        assert a.breaker_states()["crashy"] == "open" == b.breaker_states()["crashy"]
        assert b.breaker_states()["echo"] == "closed"

    def test_a_cancelled_probe_is_handed_back(self, replicas: Any) -> None:
        a, b = replicas(self.POLICY, node="a"), replicas(self.POLICY, node="b")
        assert [code(a.invoke("crashy", {})) for _ in range(3)] == [
            "MEMORY_LIMIT",
            "MEMORY_LIMIT",
            "CIRCUIT_OPEN",
        ]
        time.sleep(1.1)  # cooldown_s = 1: half-open
        gone = threading.Event()
        gone.set()
        # The probe's caller gave up before it ran: says nothing about the skill's health.
        assert code(a.invoke("crashy", {}, cancel=gone)) == "CANCELLED"
        assert code(b.invoke("crashy", {})) == "MEMORY_LIMIT", "the next call may probe"
        assert code(a.invoke("crashy", {})) == "CIRCUIT_OPEN", "the failed probe re-opened it"

    def test_half_open_probe_is_single_flight_across_replicas(
        self, replicas: Any, redis_server: RedisServer
    ) -> None:
        replicas(self.POLICY)  # the store exists
        hs = [
            open_state(StateSection(url=redis_server.url, namespace="test", node_id=f"p{i}"), {})
            for i in range(4)
        ]
        try:
            for h in hs[:2]:
                assert h.store is not None
                h.store.breaker_record("probe_me", "fail", 2, 60.0)
            assert hs[0].store is not None
            assert hs[0].store.breaker_allow("probe_me", 0.5, 30)[0] == 0
            time.sleep(0.6)
            got: list[int] = []
            barrier = threading.Barrier(4)

            def ask(h: Any) -> None:
                barrier.wait()
                got.append(h.store.breaker_allow("probe_me", 0.5, 30)[0])

            threads = [threading.Thread(target=ask, args=(h,)) for h in hs]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(got) == [0, 0, 0, 2], "exactly one replica gets the probe"
            hs[1].store.breaker_record("probe_me", "ok", 2, 60.0)  # type: ignore[union-attr]
            assert hs[2].store.breaker_allow("probe_me", 0.5, 30)[0] == 1  # type: ignore[union-attr]
        finally:
            for h in hs:
                h.close()


class TestCacheAndApprovals:
    def test_result_cache_is_shared_and_per_tenant(self, replicas: Any) -> None:
        RUNNING[0] = 0
        a, b = (
            replicas("[cache]\nttl_s = 60\n", node="a"),
            replicas("[cache]\nttl_s = 60\n", node="b"),
        )
        first = a.invoke("same", {"n": 1}, context=ctx())
        again = b.invoke("same", {"n": 1}, context=ctx())
        assert first.ok and again.ok and again.output == first.output
        assert RUNNING[0] == 1, "the second replica answered from the shared cache"
        other = b.invoke("same", {"n": 1}, context=ctx("globex"))
        assert other.ok and RUNNING[0] == 2, "another tenant never sees acme's entry"

    POLICY = '[[guardrails]]\naction = "approve"\nreason = "check"\nskills = ["echo"]\n'

    def test_approval_given_on_one_replica_holds_on_another(self, replicas: Any) -> None:
        yes = RecordingApprover(True)
        a = replicas(self.POLICY, node="a", approver=yes)
        b = replicas(self.POLICY, node="b")  # no approver at all
        assert code(b.invoke("echo", {"x": 1}, context=ctx())) == "APPROVAL_REQUIRED"
        assert code(a.invoke("echo", {"x": 1}, context=ctx())) == "ok"
        assert len(yes.asked) == 1
        assert code(b.invoke("echo", {"x": 1}, context=ctx())) == "ok"
        # Bound to the exact arguments and tenant.
        assert code(b.invoke("echo", {"x": 2}, context=ctx())) == "APPROVAL_REQUIRED"
        assert code(b.invoke("echo", {"x": 1}, context=ctx("globex"))) == "APPROVAL_REQUIRED"

    def test_approval_records_need_the_deployments_seal_key(
        self, replicas: Any, redis_server: RedisServer
    ) -> None:
        import redis

        a = replicas(self.POLICY, node="a", approver=RecordingApprover(True))
        other_keys = replicas(self.POLICY, node="b", seal="SEAL_B")
        assert code(a.invoke("echo", {"x": 1}, context=ctx())) == "ok"
        assert code(other_keys.invoke("echo", {"x": 1}, context=ctx())) == "APPROVAL_REQUIRED"
        # Someone with write access to Redis plants approvals: none is honoured.
        client = redis.Redis.from_url(redis_server.url, decode_responses=True)
        for key in client.scan_iter("test:t:acme:approval:*"):
            client.set(key, "v1.forged.e30.AAAA")
        client.close()
        fresh = replicas(self.POLICY, node="c")
        assert code(fresh.invoke("echo", {"x": 1}, context=ctx())) == "APPROVAL_REQUIRED"


class TestOutage:
    def test_redis_restart_mid_run_fails_closed_then_recovers(
        self, replicas: Any, redis_server: RedisServer, tmp_path: Path
    ) -> None:
        k = replicas(
            "[rate_limits.skills.echo]\nrate = 1000\nburst = 1000\n[breaker]\nfailures = 5\n",
            node="out",
        )
        assert code(k.invoke("echo", {})) == "ok"
        assert k.health()["state"]["available"] is True
        redis_server.stop()
        r = k.invoke("echo", {})
        assert code(r) == "STATE_UNAVAILABLE" and r.error is not None and r.error.retryable
        assert "127.0.0.1" not in r.error.message and str(redis_server.port) not in r.error.message
        h = k.health()
        assert h["ok"] is False and h["state"]["available"] is False
        assert h["state"]["refusals"]["rate_limits"] >= 1
        # Breakers fall back to local state by default: a skill with no limit still runs.
        assert code(k.invoke("crashy", {})) == "MEMORY_LIMIT"
        redis_server.start()  # same port, empty: the kernel is not restarted
        deadline = time.monotonic() + 10
        while code(k.invoke("echo", {})) != "ok":
            assert time.monotonic() < deadline, "the kernel never recovered"
            time.sleep(0.1)
        assert k.health()["state"]["available"] is True
        k.audit.flush()
        refused = [
            rec
            for rec in read_audit(tmp_path / "out.jsonl", event="invoke")
            if rec.get("outcome") == "STATE_UNAVAILABLE"
        ]
        assert refused and all("Connection" in str(rec.get("state_unavailable")) for rec in refused)

    def test_quotas_may_fall_back_to_local_counts(
        self, replicas: Any, redis_server: RedisServer
    ) -> None:
        k = replicas(
            '[tenants."*"]\ninvocations_per_day = 2\n[state.on_unavailable]\nquotas = "local"\n'
        )
        redis_server.stop()
        got = [code(k.invoke("echo", {}, context=ctx())) for _ in range(3)]
        assert got == ["ok", "ok", "RATE_LIMITED"]

    def test_breakers_may_fail_closed(self, replicas: Any, redis_server: RedisServer) -> None:
        k = replicas('[breaker]\nfailures = 5\n[state.on_unavailable]\nbreakers = "closed"\n')
        redis_server.stop()
        assert code(k.invoke("echo", {})) == "STATE_UNAVAILABLE"


class TestReload:
    def test_reload_keeps_the_store_and_refuses_a_missing_seal_key(
        self, replicas: Any, tmp_path: Path, redis_server: RedisServer
    ) -> None:
        from bastion.errors import PolicyError

        policy = "[rate_limits.skills.echo]\nrate = 0.001\nburst = 2\n"
        k = replicas(policy, node="re")
        store = k.state.store
        assert code(k.invoke("echo", {})) == "ok"
        text = k.policy.source  # "<policy text>": reload with a Policy object
        assert text.startswith("<")
        same = load_policy(text=_policy(policy, redis_server, tmp_path, "re"))
        k.reload_policy(same)
        assert k.state.store is store, "an unchanged [state] keeps its connection and leases"
        assert code(k.invoke("echo", {})) == "ok"
        assert code(k.invoke("echo", {})) == "RATE_LIMITED", "the bucket survived the reload"
        bad = _policy(policy, redis_server, tmp_path, "re").replace("SEAL_A", "NO_SUCH_KEY")
        with pytest.raises(PolicyError, match="NO_SUCH_KEY"):
            k.reload_policy(load_policy(text=bad))
        assert k.state.store is store and code(k.invoke("echo", {})) == "RATE_LIMITED"


def _policy(extra: str, redis_server: RedisServer, tmp_path: Path, node: str) -> str:
    return extra + textwrap.dedent(f"""
        [state]
        url = "{redis_server.url}"
        namespace = "test"
        node_id = "{node}"
        seal_keys_env = ["SEAL_A"]
        timeout_ms = 300
        retry_s = 0.2
        lease_ttl_s = 2
        [audit]
        path = "{tmp_path / (node + ".jsonl")}"
        """)


class TestConfig:
    @pytest.mark.parametrize(
        ("line", "words"),
        [
            ('url = "redis://:hunter2@127.0.0.1:6379/0"', "must not carry credentials"),
            ('url = "http://127.0.0.1:6379"', "is not a Redis URL"),
            ('url = "redis://127.0.0.1:6379/zero"', "must be a number"),
            ('url = "redis://127.0.0.1:99999/0"', "not a valid URL"),
            ('namespace = "a b"', "may hold only"),
            ('password_env = "1BAD"', "is not an environment variable name"),
        ],
    )
    def test_bad_state_sections_are_refused(self, line: str, words: str) -> None:
        from bastion.errors import PolicyError

        with pytest.raises(PolicyError, match=words):
            load_policy(text=f"[state]\n{line}\n")

    def test_missing_password_or_seal_key_is_a_start_up_error(
        self, redis_server: RedisServer
    ) -> None:
        from bastion.errors import ConfigError

        with pytest.raises(ConfigError, match="REDIS_PW"):
            open_state(StateSection(url=redis_server.url, password_env="REDIS_PW"), {})
        with pytest.raises(ConfigError, match="only 5 bytes"):
            open_state(StateSection(url=redis_server.url, seal_keys_env=("K",)), {"K": "short"})

    def test_rediss_url_is_accepted(self) -> None:
        assert StateSection(url="rediss://cache.internal:6380/1").url is not None


@settings(max_examples=60)
@given(st.text(max_size=20), st.text(max_size=20))
def test_tenant_keys_are_injective(a: str, b: str) -> None:
    from bastion.state.redisstore import RedisStore

    store = RedisStore(StateSection(url="redis://127.0.0.1:1/0"), environ={}, node_id="n")
    try:
        if a != b:
            assert store.tenant_key(a, "bucket") != store.tenant_key(b, "bucket")
            assert store.tenant_key(a, "cache", "s", "1", "d") != store.tenant_key(
                b, "cache", "s", "1", "d"
            )
        assert ":" not in store.tenant_key(a, "x").split(":", 3)[2]
    finally:
        store.close()
