"""The CLI contract: the --json envelope, exit statuses, tables and one-line fixes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.sitebuilder import SiteBuilder

PLUGIN = """
    from bastion import hookimpl, native_skill

    @native_skill(name="greet", version="1.0.0", description="Greets someone.",
                  input_schema={"type": "object", "properties": {"who": {"type": "string"}},
                                "required": ["who"]})
    def greet(who):
        if who == "crash":
            raise RuntimeError("crashed at /srv/app/secret.py")
        return {"greeting": "hello " + who}

    @native_skill(name="needs_net", version="1.0.0", description="Wants the network.",
                  input_schema={"type": "object"},
                  permissions={"network": ["https://api.example.test"]})
    def needs_net():
        return 1

    @hookimpl
    def bastion_skills():
        return [greet, needs_net]
"""


@pytest.fixture
def cli(tmp_path: Path):  # type: ignore[no-untyped-def]
    site = SiteBuilder(tmp_path / "site")
    site.plugin("cli-test-plugin", "cli_test_plugin", PLUGIN)
    policy = tmp_path / "bastion.toml"
    policy.write_text(
        f'[plugins]\ntrusted = ["cli-test-plugin"]\n[audit]\npath = "{tmp_path / "audit.jsonl"}"\n'
    )
    env = dict(
        os.environ,
        PYTHONPATH=str(site.root),
        BASTION_LOAD_PLUGINS="cli-test-plugin",
        BASTION_POLICY=str(policy),
    )

    def run(*args: str, stdin: str = "", code: str = "") -> subprocess.CompletedProcess[str]:
        launcher = ["-c", code] if code else ["-m", "bastion.cli"]
        return subprocess.run(
            [sys.executable, *launcher, *args],
            env=env,
            capture_output=True,
            text=True,
            input=stdin,
            cwd=tmp_path,
            timeout=120,
        )

    return run


def test_run_json_envelope_ok(cli) -> None:  # type: ignore[no-untyped-def]
    p = cli("run", "greet", "--input", '{"who": "ada"}', "--json")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1
    env = json.loads(lines[0])
    assert env["ok"] is True and env["output"] == {"greeting": "hello ada"}
    assert env["error"] is None and isinstance(env["duration_ms"], (int, float))


def test_run_leaves_the_garbage_collector_on_with_start_up_frozen(cli) -> None:  # type: ignore[no-untyped-def]
    code = (
        "import gc, sys, bastion.cli\n"
        "rc = bastion.cli.main(sys.argv[1:])\n"
        "print(rc, gc.isenabled(), gc.get_freeze_count() > 1000)\n"
    )
    p = cli("run", "greet", "--input", '{"who": "ada"}', "--json", code=code)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[-1] == "0 True True"


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["run", "greet", "--input", '{"who": "crash"}'], "SKILL_ERROR"),
        (["run", "greet", "--input", '{"who": 5}'], "INVALID_INPUT"),
        (["run", "nobody", "--input", "{}"], "NOT_FOUND"),
        (["run", "needs_net", "--input", "{}"], "DENIED"),
    ],
)
def test_run_failures_exit_1_with_one_envelope(cli, args: list[str], code: str) -> None:  # type: ignore[no-untyped-def]
    p = cli(*args, "--json")
    assert p.returncode == 1, p.stderr
    env = json.loads(p.stdout)
    assert env["ok"] is False and env["output"] is None
    assert env["error"]["code"] == code and isinstance(env["error"]["retryable"], bool)
    assert "/srv/app" not in p.stdout


def test_human_output(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p = cli("run", "greet", "--input", '{"who": "ada"}')
    assert p.returncode == 0 and '"greeting": "hello ada"' in p.stdout
    p = cli("run", "greet", "--input", '{"who": 5}')
    assert p.returncode == 1 and p.stderr.startswith("INVALID_INPUT: input.who")
    (tmp_path / "in.json").write_text('{"who": "file"}')
    p = cli("run", "greet", "--input", "@in.json")
    assert "hello file" in p.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["run", "greet", "--input", "{not json"], "--input is not valid JSON"),
        (["run", "greet", "--input", "@missing.json"], "cannot read input file"),
        (["run", "greet"], "--input"),
        (["frobnicate"], "invalid choice"),
        (["--policy", "nope.toml", "skills"], "does not exist"),
    ],
)
def test_usage_and_config_errors_exit_2(cli, args: list[str], words: str) -> None:  # type: ignore[no-untyped-def]
    p = cli(*args)
    assert p.returncode == 2
    assert words in p.stderr
    assert "Fix:" in p.stderr or "usage:" in p.stderr
    assert "Traceback" not in p.stderr


def test_bad_policy_is_a_config_error(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.toml"
    bad.write_text('[network]\nallow = ["https://x.test/path"]\n')
    p = cli("--policy", str(bad), "skills")
    assert p.returncode == 2 and "network.allow" in p.stderr and "Traceback" not in p.stderr


def test_skills_table_and_json(cli) -> None:  # type: ignore[no-untyped-def]
    p = cli("skills")
    assert p.returncode == 0
    header = p.stdout.splitlines()[0].split()
    assert header == ["SKILL", "VERSION", "PACK", "RUNTIME", "DECISION", "DESCRIPTION"]
    rows = {line.split()[0]: line.split()[4] for line in p.stdout.splitlines()[2:]}
    assert rows == {"greet": "granted", "needs_net": "DENIED"}
    data = json.loads(cli("skills", "--json").stdout)
    by = {s["name"]: s for s in data["skills"]}
    assert by["needs_net"]["granted"] is False
    assert "https://api.example.test" in by["needs_net"]["reasons"][0]


def test_skills_show(cli) -> None:  # type: ignore[no-untyped-def]
    p = cli("skills", "show", "needs_net")
    assert p.returncode == 0 and "decision: DENIED" in p.stdout and "[network] allow" in p.stdout
    p = cli("skills", "show", "ghost")
    assert p.returncode == 1 and "no skill named 'ghost'" in p.stderr


def test_policy_check(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p = cli("policy", "check", "--json")
    assert p.returncode == 0
    data = json.loads(p.stdout)
    decisions = {s["name"]: s["decision"] for s in data["skills"]}
    assert decisions == {"greet": "granted", "needs_net": "DENIED"}
    pol = tmp_path / "p2.toml"
    pol.write_text(
        '[plugins]\ntrusted = ["cli-test-plugin"]\n[skills.ghost]\nenabled = false\n'
        f'[audit]\npath = "{tmp_path / "a.jsonl"}"\n'
    )
    p = cli("--policy", str(pol), "policy", "check")
    assert p.returncode == 2 and "[skills.ghost] names a skill no loaded pack provides" in p.stdout


def test_doctor(cli) -> None:  # type: ignore[no-untyped-def]
    p = cli("doctor", "--json")
    data = json.loads(p.stdout)
    names = {c["name"]: c for c in data["checks"]}
    assert names["wasmtime"]["ok"] is True
    assert names["skills"]["detail"] == "2 found, 1 usable, 1 denied, 0 without executor"
    assert names["sandbox"]["ok"] is True and names["circuit breakers"]["ok"] is True
    assert data["health"]["skills"]["denied"] == ["needs_net"]
    human = cli("doctor")
    assert human.stdout.splitlines()[0].split() == ["CHECK", "OK", "DETAIL"]


def test_audit_reads_what_run_wrote(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cli("run", "greet", "--input", '{"who": "a"}')
    cli("run", "greet", "--input", '{"who": "crash"}')
    cli("run", "needs_net", "--input", "{}")
    p = cli("audit", "--json", "--event", "invoke")
    assert p.returncode == 0, p.stderr
    recs = [json.loads(line) for line in p.stdout.splitlines()]
    assert [(r["skill"], r["outcome"]) for r in recs] == [
        ("greet", "ok"),
        ("greet", "SKILL_ERROR"),
        ("needs_net", "DENIED"),
    ]
    p = cli("audit", "--json", "--skill", "greet", "--tail", "1")
    (only,) = [json.loads(line) for line in p.stdout.splitlines()]
    assert only["outcome"] == "SKILL_ERROR"
    p = cli("audit")
    assert p.stdout.splitlines()[0].split()[:3] == ["TIME", "EVENT", "SKILL"]
    # A torn last line (a crash mid-write) is skipped and counted, never fatal.
    with (tmp_path / "audit.jsonl").open("a") as f:
        f.write('{"event": "invoke", "skill": "gr')
    p = cli("audit", "--json")
    assert p.returncode == 0 and len(p.stdout.splitlines()) == 3
    assert "1 torn or corrupt line(s) skipped" in p.stderr
    p = cli("audit", "--since", "yesterday")
    assert p.returncode == 2 and "RFC 3339" in p.stderr


def test_unwritable_audit_log_is_a_config_error(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the audit folder should be")
    pol = tmp_path / "p3.toml"
    pol.write_text(f'[audit]\npath = "{blocker / "audit.jsonl"}"\n')
    p = cli("--policy", str(pol), "skills")
    assert p.returncode == 2
    assert "cannot open the audit log" in p.stderr and "[audit] path" in p.stderr
    assert "Traceback" not in p.stderr


def test_audit_follow_prints_new_records(tmp_path: Path) -> None:
    import selectors

    from bastion.audit import AuditLog

    path = tmp_path / "follow.jsonl"
    log = AuditLog(path)
    log.write("invoke", skill="before", outcome="ok")
    log.flush()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bastion.cli", "audit", "--file", str(path), "--follow", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        lines: list[dict[str, Any]] = []
        written = False
        for _ in range(400):  # bounded: at most ~40 s of 0.1 s waits
            if sel.select(timeout=0.1):
                line = proc.stdout.readline()
                if not line:
                    break
                lines.append(json.loads(line))
            if lines and not written:
                log.write("invoke", skill="after", outcome="TIMEOUT")
                log.flush()
                written = True
            if len(lines) == 2:
                break
        assert [(r["skill"], r["outcome"]) for r in lines] == [
            ("before", "ok"),
            ("after", "TIMEOUT"),
        ]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
