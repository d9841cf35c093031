"""``bastion run``'s one worker: started first thing (``prespawn``) and taken by the pool,
``--isolation`` overriding the policy, and ``peek_isolation`` (the cheap look at the policy
that decides whether to start it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bastion import load_policy
from bastion.runmode import peek_isolation, with_isolation
from bastion.sandbox.workers import prespawn
from tests.workers.conftest import MakePool, MakeRequest

HELLO = "def run(name: str = 'x') -> dict:\n    return {'hi': name}\n"
# Sleeps far past its deadline: process mode kills it at the deadline, thread mode cannot
# stop a WASI sleep and answers TIMEOUT only when it ends. Which one ran shows in the time.
NAP_S = 4.0
NAPPER = f"import time\n\ndef run() -> dict:\n    time.sleep({NAP_S})\n    return {{}}\n"


def _pack(root: Path) -> Path:
    for name, source, limits in (("hello", HELLO, ""), ("napper", NAPPER, "timeout_ms = 300")):
        d = root / name
        d.mkdir(parents=True)
        (d / "skill.py").write_text(source)
        (d / "skill.toml").write_text(
            f'name = "{name}"\nversion = "1.0.0"\ndescription = "{name}"\nruntime = "python"\n'
            f'entry = "skill.py"\ninput_schema = {{ type = "object" }}\n[limits]\n{limits}\n'
        )
    (root / "bastion-pack.toml").write_text(
        'name = "iso"\nversion = "1.0.0"\nskills = ["hello", "napper"]\n'
    )
    return root


def _run(
    tmp_path: Path, *args: str, policy: str = ""
) -> tuple[subprocess.CompletedProcess[str], float]:
    pol = tmp_path / "bastion.toml"
    pol.write_text(policy + f'\n[audit]\npath = "{tmp_path / "audit.jsonl"}"\n')
    env = {**os.environ, "BASTION_POLICY": str(pol)}
    pack = str(_pack(tmp_path / "pack"))
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "bastion.cli", "--pack", pack, "run", *args],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    return proc, time.monotonic() - t0


class TestIsolationFlag:
    @pytest.mark.parametrize("flag", [[], ["--isolation", "process"], ["--isolation", "thread"]])
    def test_hello_runs_in_each_mode(self, tmp_path: Path, flag: list[str]) -> None:
        proc, _ = _run(tmp_path, "hello", "--input", '{"name": "w"}', "--json", *flag)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["output"] == {"hi": "w"}

    def test_thread_flag_overrides_a_process_policy(self, tmp_path: Path) -> None:
        proc, took = _run(tmp_path, "napper", "--input", "{}", "--json", "--isolation", "thread",
                          policy='[workers]\nisolation = "process"\n')  # fmt: skip
        assert json.loads(proc.stdout)["error"]["code"] == "TIMEOUT"
        assert took >= NAP_S  # in this process: the sleep could not be cut short

    def test_process_flag_overrides_a_thread_policy(self, tmp_path: Path) -> None:
        proc, took = _run(tmp_path, "napper", "--input", "{}", "--json", "--isolation", "process",
                          policy='[workers]\nisolation = "thread"\n')  # fmt: skip
        assert json.loads(proc.stdout)["error"]["code"] == "TIMEOUT"
        assert took < NAP_S  # in a worker: killed at its deadline

    def test_an_unknown_mode_is_a_usage_error_naming_it(self, tmp_path: Path) -> None:
        proc, _ = _run(tmp_path, "hello", "--input", "{}", "--isolation", "vm")
        assert proc.returncode == 2
        assert "'vm'" in proc.stderr


class TestPeekIsolation:
    def test_the_flag_wins(self, tmp_path: Path) -> None:
        pol = tmp_path / "p.toml"
        pol.write_text('[workers]\nisolation = "process"\n')
        assert peek_isolation(str(pol), "thread") == "thread"

    def test_reads_the_policy_file(self, tmp_path: Path) -> None:
        pol = tmp_path / "p.toml"
        pol.write_text('[workers]\nisolation = "thread"\n')
        assert peek_isolation(str(pol)) == "thread"
        pol.write_text("[workers]\ncount = 2\n")
        assert peek_isolation(str(pol)) == "process"

    @pytest.mark.parametrize("text", ["[workers\n", '[workers]\nisolation = "vm"\n', "\xff"])
    def test_a_file_it_cannot_use_means_no_early_worker(self, tmp_path: Path, text: str) -> None:
        pol = tmp_path / "p.toml"
        pol.write_bytes(text.encode("latin-1"))
        assert peek_isolation(str(pol)) is None

    def test_a_missing_file_means_no_early_worker(self, tmp_path: Path) -> None:
        assert peek_isolation(str(tmp_path / "absent.toml")) is None

    def test_with_isolation_changes_only_that(self) -> None:
        pol = load_policy(text='[workers]\nisolation = "process"\ncount = 3\n')
        out = with_isolation(pol, "thread")
        assert out.doc.workers.isolation == "thread"
        assert out.doc.workers.count == 3
        assert pol.doc.workers.isolation == "process"


class TestPrespawn:
    def test_the_pool_takes_the_early_worker(
        self, make_pool: MakePool, pyskill: Callable[[str, str], Path], request_for: MakeRequest
    ) -> None:
        pool = make_pool()
        prespawn.prespawn(pool.settings.entry)
        early = prespawn._ready[pool.settings.entry][0].pid
        assert pool.run(request_for(pyskill("hello", HELLO))) == b'{"hi": "x"}'
        assert pool.pids() == [early]
        assert pool.stats.started == 1

    def test_an_unused_early_worker_is_killed_and_reaped(self) -> None:
        prespawn.prespawn()
        proc = prespawn._ready[prespawn.DEFAULT_ENTRY][0]
        prespawn.discard()
        assert proc.returncode is not None  # reaped: no zombie left
        assert prespawn.take(prespawn.DEFAULT_ENTRY) is None
