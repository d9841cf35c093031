"""Schema derivation at discovery: failures are remembered by content hash, and with process
isolation the derivation runs in a worker (the kernel never loads the runner for it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.discovery import discover
from bastion.memo import MEMO_ENV, default_memo
from bastion.plugins import make_plugin_manager
from bastion.policy import Policy, load_policy
from bastion.pyschema import skill_digest
from bastion.sandbox.runner_build import runner_digest
from bastion.sandbox.workers.derive import derivation_workers

pytestmark = pytest.mark.slow

PROCESS = '[workers]\nisolation = "process"\n'
LOOPS = '"""Loops."""\nwhile True:\n    pass\n\ndef run() -> int:\n    return 1\n'
GOOD = 'def run(n: int) -> int:\n    """Doubles a number."""\n    return 2 * n\n'


def _pack(root: Path, source: str, tag: str) -> Path:
    """A one-skill pack; ``tag`` (a comment) makes its bytes unique to this test run, so the
    first discovery is a miss in the shared test cache's memo."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "bastion-pack.toml").write_text('name = "p"\nversion = "1.0.0"\nskills = ["s"]\n')
    (root / "s").mkdir(exist_ok=True)
    (root / "s" / "skill.toml").write_text(
        'name = "s"\nversion = "1.0.0"\nruntime = "python"\nentry = "skill.py"\n'
    )
    (root / "s" / "skill.py").write_text(f"# {tag}\n{source}")
    return root


def _discover(policy: Policy, pack: Path) -> tuple[list[str], int, dict[str, object]]:
    """Problems, derivation workers started, and the skills' input schemas."""
    with derivation_workers(policy, roots=[pack]) as deriver:
        found = discover(policy, make_plugin_manager(), pack_paths=[pack], entry_points=False)
    schemas = {n: s.input_schema for n, s in found.skills.items()}
    return [p.message for p in found.problems], deriver.started, schemas


@pytest.fixture
def tag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv(MEMO_ENV, raising=False)
    monkeypatch.setenv("BASTION_LOAD_PLUGINS", "")
    return f"{tmp_path.name} {os.getpid()} {os.urandom(4).hex()}"


class TestFailuresAreMemoized:
    def test_a_looping_module_costs_its_deadline_once_and_is_refused_the_same_way(
        self, tmp_path: Path, tag: str
    ) -> None:
        policy = load_policy(text=PROCESS)
        pack = _pack(tmp_path / "pack", LOOPS, tag)
        first, started, schemas = _discover(policy, pack)
        assert started == 1 and not schemas
        assert len(first) == 1 and "did not finish within 3000 ms" in first[0], first
        memo = default_memo()
        assert memo is not None
        entry = memo.path("pyschema-guest", runner_digest(), skill_digest(pack / "s", "skill.py"))
        stored = json.loads(entry.read_text())
        assert stored["failed"]["code"] == "TIMEOUT"
        assert "did not finish" in stored["failed"]["message"]
        # The same bytes again: no worker, no import, the same denial.
        again, started, schemas = _discover(policy, pack)
        assert (again, started, schemas) == (first, 0, {})

    def test_a_change_to_the_source_derives_again(self, tmp_path: Path, tag: str) -> None:
        policy = load_policy(text=PROCESS)
        pack = _pack(tmp_path / "pack", LOOPS, tag)
        assert _discover(policy, pack)[1] == 1
        (pack / "s" / "skill.py").write_text(f"# {tag}\n{GOOD}")
        problems, started, schemas = _discover(policy, pack)
        assert (problems, started) == ([], 1)
        assert schemas["s"]["required"] == ["n"]  # type: ignore[index]

    def test_a_remembered_timeout_expires(self, tmp_path: Path, tag: str) -> None:
        policy = load_policy(text=PROCESS)
        pack = _pack(tmp_path / "pack", LOOPS, tag)
        _discover(policy, pack)
        memo = default_memo()
        assert memo is not None
        entry = memo.path("pyschema-guest", runner_digest(), skill_digest(pack / "s", "skill.py"))
        stored = json.loads(entry.read_text())
        stored["at"] -= 2 * 3600  # written two hours ago: past FAILURE_TIMEOUT_TTL_S
        entry.write_text(json.dumps(stored))
        problems, started, _ = _discover(policy, pack)
        assert started == 1 and "did not finish" in problems[0]

    def test_a_bad_type_hint_is_remembered_with_its_parameter_and_fix(
        self, tmp_path: Path, tag: str
    ) -> None:
        policy = load_policy(text='[workers]\nisolation = "thread"\n')
        src = 'from typing import Any\ndef run(x: Any) -> int:\n    """Any."""\n    return 1\n'
        pack = _pack(tmp_path / "pack", src, tag)
        found = discover(policy, make_plugin_manager(), pack_paths=[pack], entry_points=False)
        first = [p.message for p in found.problems]
        assert "parameter 'x' of run(): Any says nothing" in first[0]
        again = discover(policy, make_plugin_manager(), pack_paths=[pack], entry_points=False)
        assert [p.message for p in again.problems] == first


class TestDerivationInAWorker:
    def test_schemas_derived_in_a_worker_equal_those_derived_in_process(
        self, tmp_path: Path, tag: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        pack = _pack(tmp_path / "pack", GOOD, tag)
        monkeypatch.setenv(MEMO_ENV, "1")  # both derive
        _, started, in_worker = _discover(load_policy(text=PROCESS), pack)
        found = discover(
            load_policy(text='[workers]\nisolation = "thread"\n'),
            make_plugin_manager(),
            pack_paths=[pack],
            entry_points=False,
        )
        assert started == 1
        assert in_worker == {"s": found.skills["s"].input_schema}

    def test_a_skill_outside_the_first_workers_folders_gets_a_worker_that_reads_it(
        self, tmp_path: Path, tag: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(MEMO_ENV, "1")
        a = _pack(tmp_path / "a", GOOD, tag)
        b = _pack(tmp_path / "b", GOOD.replace("2 * n", "3 * n"), tag)
        policy = load_policy(text=PROCESS)
        with derivation_workers(policy, roots=[a]) as deriver:
            for pack in (a, b):
                found = discover(
                    policy, make_plugin_manager(), pack_paths=[pack], entry_points=False
                )
                assert not found.problems, found.problems
        assert deriver.started == 2

    def test_the_kernel_process_never_loads_the_runner_to_derive(self, tmp_path: Path) -> None:
        """Measured in a fresh interpreter: what discovery of the first-party packs leaves in
        the kernel's compile cache (the runner is ~270 MiB once mapped), per isolation mode."""
        plugins = Path(__file__).resolve().parents[2] / "plugins"
        packs = sorted(str(p.parent) for p in plugins.glob("*/bastion_pack_*/bastion-pack.toml"))
        assert len(packs) >= 3
        script = (
            "import sys\n"
            "from bastion.kernel import Kernel\n"
            "from bastion.policy import load_policy\n"
            "policy = load_policy(text=f'[workers]\\nisolation = \"{sys.argv[1]}\"\\n')\n"
            "k = Kernel(policy, pack_paths=sys.argv[2:], entry_points=False, environ={})\n"
            "import bastion.sandbox.cache as c\n"
            "loaded = 0 if c._default is None else len(c._default._memo) + "
            "len(c._default._path_memo)\n"
            "print(loaded, len(k.problems), sum(s.usable for s in k.skills()))\n"
            "k.close()\n"
        )
        env = {**os.environ, MEMO_ENV: "1", "BASTION_LOAD_PLUGINS": ""}
        out = {}
        for mode in ("thread", "process"):
            proc = subprocess.run(
                [sys.executable, "-c", script, mode, *packs],
                capture_output=True,
                text=True,
                env=env,
                timeout=300,
                check=False,
            )
            assert proc.returncode == 0, proc.stderr[-2000:]
            out[mode] = [int(x) for x in proc.stdout.split()]
        # Both modes discover the same skills with no problem; only thread mode loaded the
        # runner into the kernel (the anchor that shows the check can fail).
        assert out["thread"][1:] == out["process"][1:] and out["process"][1] == 0
        assert out["thread"][0] >= 1
        assert out["process"][0] == 0
