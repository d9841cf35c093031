"""Every sink the host writes a skill's data to redacts granted secrets in every spelling.

A real Python skill is handed generated spellings of its granted secrets (``tests/secretspell``)
and pushes them through each sink: its result, an error message, its own ``log()`` lines (read
from the stderr of a real ``bastion run`` process at the default log level), the ``--json``
envelope, and the audit file (the network record of a denied request whose URL carries the
spelling, and the invocation record). The oracle decodes with the standard library.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion import Kernel, load_policy
from bastion.sandbox.runner_build import load_runner
from tests.secretspell import KINDS, SECRETS, around, leaks, spelled

SKILL_TOML = f"""
name = "leaky"
version = "1.0.0"
description = "Echoes, logs, fails with or fetches what it is given."
runtime = "python"
entry = "skill.py"
[permissions]
secrets = {json.dumps(sorted(SECRETS))}
"""

SOURCE = '''
import bastion_sdk


def run(text: str, mode: str = "echo") -> str:
    """Push ``text`` through one sink."""
    for name in ("DEMO_TOKEN", "DB_PASSWORD", "PASSPHRASE", "EMOJI_KEY"):
        bastion_sdk.secret(name)  # the skill really holds them
    if mode == "log":
        for line in text.split("\\n"):
            bastion_sdk.log.warning(line)
        return "logged"
    if mode == "error":
        raise ValueError(text)
    if mode == "http":
        try:
            bastion_sdk.http.get("https://denied.example/?q=" + text)
        except bastion_sdk.SdkError:
            pass
        return "fetched"
    return text
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sinks")
    pack = root / "pack"
    (pack / "leaky").mkdir(parents=True)
    (pack / "bastion-pack.toml").write_text('name = "p"\nversion = "1.0.0"\nskills = ["leaky"]\n')
    (pack / "leaky" / "skill.toml").write_text(SKILL_TOML)
    (pack / "leaky" / "skill.py").write_text(SOURCE)
    audit = root / "audit.jsonl"
    policy = root / "bastion.toml"
    policy.write_text(
        f'[secrets]\nallow = {json.dumps(sorted(SECRETS))}\n[audit]\npath = "{audit}"\n'
    )
    load_runner()  # build/compile once before any deadline starts
    return {"pack": pack, "policy": policy, "audit": audit}


@pytest.fixture(scope="module")
def kernel(site: dict[str, Path]) -> Iterator[Kernel]:
    k = Kernel(
        load_policy(site["policy"]),
        pack_paths=[site["pack"]],
        entry_points=False,
        environ=dict(os.environ, **SECRETS),
    )
    st_ = k.skill("leaky")
    assert st_ is not None and st_.grant.granted, (st_, k.problems())
    yield k
    k.close()


def _strings(value: Any) -> Iterator[str]:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            yield v
        elif isinstance(v, dict):
            stack += list(v.keys()) + list(v.values())
        elif isinstance(v, list):
            stack += v


def _audit_records(path: Path, invocation_id: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if rec.get("invocation_id") == invocation_id:
            out.append((line, rec))
    return out


def _assert_clean(where: str, text: str) -> None:
    for name, secret in SECRETS.items():
        assert not leaks(secret, text), f"{name} leaks through {where}: {text[:600]!r}"


SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@st.composite
def one_spelling(draw: Any) -> str:
    name = draw(st.sampled_from(sorted(SECRETS)))
    return draw(around) + draw(spelled(SECRETS[name]))[1] + draw(around)


@pytest.mark.parametrize("mode", ["echo", "error", "http"])
@SETTINGS
@given(text=one_spelling())
def test_results_errors_and_audit_records(
    kernel: Kernel, site: dict[str, Path], mode: str, text: str
) -> None:
    r = kernel.invoke("leaky", {"text": text, "mode": mode})
    if mode == "echo":
        assert r.ok, r.error
        _assert_clean("the result", json.dumps(r.output, ensure_ascii=False))
    elif mode == "error":
        assert r.error is not None and r.error.code == "SKILL_ERROR"
        _assert_clean("the error message", r.error.message)
    kernel.audit.flush()
    records = _audit_records(site["audit"], r.invocation_id or "")
    assert records, "the invocation was audited"
    if mode == "http":
        assert any(rec.get("event") == "http" for _, rec in records), records
    for line, rec in records:
        _assert_clean("the audit file", line)
        for s in _strings(rec):
            _assert_clean("an audit field", s)


def _bastion(site: dict[str, Path], *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, **SECRETS, BASTION_POLICY=str(site["policy"]), BASTION_LOAD_PLUGINS="")
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli", "--pack", str(site["pack"]), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_log_lines_and_the_envelope_of_a_real_run(site: dict[str, Path], data: Any) -> None:
    """One process per sink carries every kind of spelling at once (one per line)."""
    forms = []
    for kind in KINDS:
        name = data.draw(st.sampled_from(sorted(SECRETS)))
        forms.append(data.draw(around) + data.draw(spelled(SECRETS[name], kind))[1])
    text = "\n".join(f.replace("\n", " ") for f in forms)
    p = _bastion(site, "run", "leaky", "--input", json.dumps({"text": text, "mode": "log"}))
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stderr.count("skill.log") == len(forms), p.stderr[-2000:]
    _assert_clean("stderr", p.stderr)
    for mode in ("echo", "error"):
        p = _bastion(
            site, "run", "leaky", "--json", "--input", json.dumps({"text": text, "mode": mode})
        )
        envelope = json.loads(p.stdout)
        assert envelope["ok"] is (mode == "echo"), envelope
        _assert_clean(f"the --json envelope ({mode})", p.stdout)
        _assert_clean(f"stderr ({mode})", p.stderr)
