"""A skill in a loop of denied HTTP calls cannot flood the host log.

Every host log line a skill causes is rate-limited per invocation and kind (``InvocationLog``):
after ``HOST_LINES_PER_KIND`` lines of a kind (``SKILL_LOG_LINES`` for the skill's own
``log()``), later ones are counted and one ``log_lines_suppressed`` line per kind is written at
the end. Counted on the stderr of a real ``bastion run`` process, for a WASI module (C, built
with zig) and a Python skill, each looping over a URL it was not granted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.logs import HOST_LINES_PER_KIND, SKILL_LOG_LINES
from bastion.sandbox.runner_build import load_runner
from tests.sandbox.guestbuild import GUESTS, build_c

LOOPS = 1500  # past both caps

PY_SOURCE = '''
import bastion_sdk


def run(n: int) -> dict:
    """Try a URL that is not granted, n times, and log each try."""
    for _ in range(n):
        try:
            bastion_sdk.http.get("https://not-granted.example/loop")
        except bastion_sdk.NetworkDenied:
            pass
        bastion_sdk.log.warning("still trying")
    return {"done": n}
'''


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("flood")
    (root / "bastion-pack.toml").write_text(
        'name = "p"\nversion = "1.0.0"\nskills = ["pyloop", "wasmloop"]\n'
    )
    (root / "pyloop").mkdir()
    (root / "pyloop" / "skill.toml").write_text(
        'name = "pyloop"\nversion = "1.0.0"\ndescription = "Loops."\nruntime = "python"\n'
        'entry = "skill.py"\n[limits]\ntimeout_ms = 60000\n'
    )
    (root / "pyloop" / "skill.py").write_text(PY_SOURCE)
    (root / "wasmloop").mkdir()
    (root / "wasmloop" / "skill.wasm").write_bytes(build_c(GUESTS / "denyloop.c"))
    (root / "wasmloop" / "skill.toml").write_text(
        'name = "wasmloop"\nversion = "1.0.0"\ndescription = "Loops."\nruntime = "wasm"\n'
        'entry = "skill.wasm"\ninput_schema = { type = "object" }\n[limits]\ntimeout_ms = 60000\n'
    )
    (root / "bastion.toml").write_text(f'[audit]\npath = "{root / "audit.jsonl"}"\n')
    load_runner()
    return root


@pytest.mark.parametrize("skill", ["pyloop", "wasmloop"])
def test_denied_calls_in_a_loop_write_a_bounded_number_of_lines(pack: Path, skill: str) -> None:
    env = dict(os.environ, BASTION_POLICY=str(pack / "bastion.toml"), BASTION_LOAD_PLUGINS="")
    p = subprocess.run(
        [
            *(sys.executable, "-m", "bastion.cli", "--pack", str(pack), "run", skill),
            *("--json", "--input", json.dumps({"n": LOOPS})),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads(p.stdout)["output"] == {"done": LOOPS}
    lines = p.stderr.splitlines()
    summaries = [ln for ln in lines if "log_lines_suppressed" in ln]
    rest = [ln for ln in lines if "log_lines_suppressed" not in ln]
    denied = [ln for ln in rest if "http request denied" in ln]
    logged = [ln for ln in rest if "skill.log" in ln]
    assert len(denied) == HOST_LINES_PER_KIND
    assert len(logged) == SKILL_LOG_LINES
    assert len(summaries) == 2, summaries
    assert any("http request denied" in ln for ln in summaries), summaries
    assert any("kind=skill.log" in ln for ln in summaries), summaries
    assert f"suppressed={LOOPS - HOST_LINES_PER_KIND}" in " ".join(summaries)
    assert f"suppressed={LOOPS - SKILL_LOG_LINES}" in " ".join(summaries)
    # Nothing else: the whole of stderr is bounded whatever LOOPS is.
    assert len(lines) <= HOST_LINES_PER_KIND + SKILL_LOG_LINES + 10
