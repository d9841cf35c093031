"""Separate ``bastion`` processes share limits through Redis; doctor reports the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.sitebuilder import SiteBuilder
from tests.state.redisserver import RedisServer

PLUGIN = """
    from bastion import hookimpl, native_skill

    @native_skill(name="greet", version="1.0.0", description="Greets someone.",
                  input_schema={"type": "object", "properties": {"who": {"type": "string"}},
                                "required": ["who"]})
    def greet(who):
        return {"greeting": "hello " + who}

    @hookimpl
    def bastion_skills():
        return [greet]
"""


def _env(tmp_path: Path, policy_text: str) -> dict[str, str]:
    site = SiteBuilder(tmp_path / "site")
    site.plugin("state-cli-plugin", "state_cli_plugin", PLUGIN)
    policy = tmp_path / "bastion.toml"
    policy.write_text(
        '[plugins]\ntrusted = ["state-cli-plugin"]\n'
        f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n' + policy_text
    )
    return dict(
        os.environ,
        PYTHONPATH=str(site.root),
        BASTION_LOAD_PLUGINS="state-cli-plugin",
        BASTION_POLICY=str(policy),
    )


def _bastion(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_three_cli_runs_with_burst_two_let_exactly_two_through(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    env = _env(
        tmp_path,
        f'[state]\nurl = "{redis_server.url}"\n'
        "[rate_limits.skills.greet]\nrate = 0.001\nburst = 2\n",
    )
    runs = [_bastion(env, "run", "greet", "--input", '{"who": "ada"}', "--json") for _ in range(3)]
    outs = [json.loads(p.stdout) for p in runs]
    assert [p.returncode for p in runs] == [0, 0, 1], [p.stderr for p in runs]
    assert outs[2]["error"]["code"] == "RATE_LIMITED" and outs[2]["error"]["retryable"]
    # The in-process backend (no [state]) is today's behaviour: every process has its own bucket.
    local = _env(tmp_path / "local", "[rate_limits.skills.greet]\nrate = 0.001\nburst = 2\n")
    assert [
        _bastion(local, "run", "greet", "--input", '{"who": "ada"}').returncode for _ in range(3)
    ] == [0, 0, 0]


def test_doctor_reports_the_store_and_its_outage(tmp_path: Path, redis_server: RedisServer) -> None:
    env = _env(tmp_path, f'[state]\nurl = "{redis_server.url}"\ntimeout_ms = 300\n')
    up = _bastion(env, "doctor", "--json")
    check = {c["name"]: c for c in json.loads(up.stdout)["checks"]}["state store"]
    assert check["ok"] and "redis" in check["detail"] and "per-process" in check["detail"]
    redis_server.stop()
    down = _bastion(env, "doctor")
    assert down.returncode == 1
    line = next(ln for ln in down.stdout.splitlines() if ln.startswith("state store"))
    assert "UNAVAILABLE" in line and "Traceback" not in down.stderr


def test_run_refuses_with_state_unavailable_when_the_store_is_down(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    env = _env(
        tmp_path,
        f'[state]\nurl = "{redis_server.url}"\ntimeout_ms = 300\n'
        "[rate_limits.skills.greet]\nrate = 10\nburst = 10\n",
    )
    redis_server.stop()
    p = _bastion(env, "run", "greet", "--input", '{"who": "ada"}', "--json")
    out = json.loads(p.stdout)
    assert p.returncode == 1 and out["error"]["code"] == "STATE_UNAVAILABLE"
    assert out["error"]["retryable"] is True and "Traceback" not in p.stderr
