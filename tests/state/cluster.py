"""A real deployment on loopback: Redis, three ``bastion serve`` replicas and HAProxy in front.

Every replica has its own policy file (the same rules, its own ``node_id`` and audit file), all
share one Redis namespace and the same seal keys. HAProxy balances round robin with health
checks on ``/readyz``; a request carrying ``X-Replica: rN`` is sent to replica N (the tests use
it to ask on one replica and answer on another).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.sandbox.guestbuild import GUESTS, build_c
from tests.state.redisserver import RedisServer, free_port

__all__ = ["HAPROXY", "TOKENS", "Cluster", "Replica", "build_pack"]

HAPROXY = shutil.which("haproxy")
BASTION = str(Path(sys.executable).with_name("bastion"))
HERE = Path(__file__).parent

TOKENS = {
    "quota": ("acme", "quota-token-0123456789abcdef"),
    "burst": ("beta", "burst-token-0123456789abcdef"),
    "slots": ("gamma", "slots-token-0123456789abcdef"),
    "other": ("delta", "other-token-0123456789abcdef"),
}
"""Caller name -> (tenant, bearer token); the policy holds only the tokens' sha256."""

ENV = {
    "CLUSTER_SEAL_KEY": "s" * 48,
    "CLUSTER_STATE_KEY": "r" * 48,
}


def build_pack(folder: Path) -> Path:
    """echo, guarded (echo behind an approval), nap (200 ms, then echo), fail (SKILL_ERROR)."""
    echo = build_c(GUESTS / "echo.c")
    nap = build_c(HERE / "guests" / "nap200.c")
    fail = build_c(GUESTS / "fail.c")
    skills = {"echo": echo, "guarded": echo, "nap": nap, "fail": fail}
    for name, wasm in skills.items():
        d = folder / name
        d.mkdir(parents=True)
        (d / "skill.toml").write_text(
            f'name = "{name}"\nversion = "1.0.0"\ndescription = "The {name} skill."\n'
            'runtime = "wasm"\nentry = "skill.wasm"\ninput_schema = { type = "object" }\n'
        )
        (d / "skill.wasm").write_bytes(wasm)
    (folder / "bastion-pack.toml").write_text(
        'name = "cluster-test"\nversion = "1.0.0"\nskills = ['
        + ", ".join(f'"{s}"' for s in skills)
        + "]\n"
    )
    return folder


def policy_text(node: str, audit: Path, redis_url: str, extra: str) -> str:
    tokens = "".join(
        f'[[serve.tokens]]\nname = "{name}"\ntenant = "{tenant}"\n'
        f'sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'
        for name, (tenant, token) in TOKENS.items()
    )
    return f"""
[audit]
path = "{audit.as_posix()}"

[kernel]
max_workers = 8

[state]
url = "{redis_url}"
namespace = "cluster"
node_id = "{node}"
seal_keys_env = ["CLUSTER_SEAL_KEY"]
timeout_ms = 500
lease_ttl_s = 3

[serve]
state_key_env = "CLUSTER_STATE_KEY"
max_queue = 256

[[guardrails]]
action = "approve"
reason = "the guarded skill needs a person"
skills = ["guarded"]

{tokens}
{extra}
"""


@dataclass
class Replica:
    name: str
    policy: Path
    audit: Path
    log: Path
    proc: subprocess.Popen[str] | None = None
    port: int = 0

    def records(self, event: str = "invoke") -> list[dict[str, Any]]:
        if not self.audit.exists():
            return []
        out = []
        for line in self.audit.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line torn by SIGKILL
            if rec.get("event") == event:
                out.append(rec)
        return out


@dataclass
class Cluster:
    """Start with ``start()``, stop with ``stop()`` (always: the test's finally)."""

    root: Path
    redis: RedisServer
    pack: Path
    extra: str
    replicas: list[Replica] = field(default_factory=list)
    lb_port: int = 0
    lb: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.lb_port}/mcp"

    def env(self) -> dict[str, str]:
        env = dict(os.environ, **ENV)
        env["BASTION_LOAD_PLUGINS"] = ""
        env.setdefault("BASTION_CACHE_DIR", str(Path.home() / ".cache" / "bastion-tests"))
        return env

    def start(self, n: int = 3) -> None:
        for i in range(1, n + 1):
            name = f"r{i}"
            folder = self.root / name
            folder.mkdir()
            audit = folder / "audit.jsonl"
            policy = folder / "bastion.toml"
            policy.write_text(policy_text(name, audit, self.redis.url, self.extra))
            rep = Replica(name, policy, audit, folder / "serve.log")
            self._spawn(rep)
            self.replicas.append(rep)
        for rep in self.replicas:
            self._wait_ready(rep)
        self._start_lb()

    def _spawn(self, rep: Replica) -> None:
        with rep.log.open("w") as err:
            rep.proc = subprocess.Popen(
                [
                    BASTION,
                    "--log-level",
                    "info",
                    "--policy",
                    str(rep.policy),
                    "--pack",
                    str(self.pack),
                    "serve",
                    "--port",
                    "0",
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
                text=True,
                env=self.env(),
                cwd=str(rep.policy.parent),
            )

    def _wait_ready(self, rep: Replica) -> None:
        assert rep.proc is not None
        end = time.monotonic() + 180
        while time.monotonic() < end:
            if rep.proc.poll() is not None:
                raise AssertionError(f"{rep.name} exited: {rep.log.read_text()[-2000:]}")
            if not rep.port:
                m = re.search(r"listening on http://127\.0\.0\.1:(\d+)/mcp", rep.log.read_text())
                rep.port = int(m.group(1)) if m else 0
            if rep.port:
                try:
                    if (
                        httpx.get(f"http://127.0.0.1:{rep.port}/readyz", timeout=5).status_code
                        == 200
                    ):
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
        raise AssertionError(f"{rep.name} never became ready: {rep.log.read_text()[-2000:]}")

    def _start_lb(self) -> None:
        assert HAPROXY is not None
        self.lb_port = free_port()
        # Each server is named by its own address, and ``http-send-name-header Host`` sends
        # that name as the Host header: a replica's DNS-rebinding check accepts its own address.
        servers = "\n".join(
            f"    server 127.0.0.1:{r.port} 127.0.0.1:{r.port} check inter 300ms fall 2 rise 2"
            for r in self.replicas
        )
        routes = "\n".join(
            f"    use-server 127.0.0.1:{r.port} if {{ req.hdr(x-replica) -m str {r.name} }}"
            for r in self.replicas
        )
        cfg = self.root / "haproxy.cfg"
        cfg.write_text(f"""
global
    maxconn 2000

defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    retries 2
    option redispatch

frontend mcp
    bind 127.0.0.1:{self.lb_port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    http-send-name-header Host
{routes}
{servers}
""")
        check = subprocess.run([HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        self.lb = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=(self.root / "haproxy.log").open("w"),
        )
        end = time.monotonic() + 30
        while time.monotonic() < end:
            try:
                r = httpx.get(f"http://127.0.0.1:{self.lb_port}/readyz", timeout=5)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("haproxy never answered")

    def kill(self, rep: Replica) -> None:
        """SIGKILL one replica (no chance to flush, release or say goodbye)."""
        assert rep.proc is not None
        rep.proc.send_signal(signal.SIGKILL)
        rep.proc.wait(10)

    def stop(self) -> None:
        if self.lb is not None and self.lb.poll() is None:
            self.lb.terminate()
            self.lb.wait(10)
        for rep in self.replicas:
            if rep.proc is not None and rep.proc.poll() is None:
                rep.proc.send_signal(signal.SIGINT)
                try:
                    rep.proc.wait(15)
                except subprocess.TimeoutExpired:
                    rep.proc.kill()
                    rep.proc.wait(5)

    def all_records(self, event: str = "invoke") -> list[dict[str, Any]]:
        return [rec for rep in self.replicas for rec in rep.records(event)]
