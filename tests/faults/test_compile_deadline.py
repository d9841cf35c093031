"""Compiling never counts against a call's timeout, for every artifact kind and both isolation
modes: the first use of a WASI module or a component that ``prepare()`` never compiled takes
far longer than its 200 ms timeout to compile, and the call still succeeds (not ``TIMEOUT``,
the breaker untouched); past the bounded start-up wait it is ``NOT_READY`` (retryable, the
breaker ignores it) and a later call finds the compile done.

Each case runs in a subprocess on an empty private cache, so the compile really happens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.faults.bigguest import big_component, big_module

TIMEOUT_MS = 200


def make_pack(root: Path) -> Path:
    pack = root / "pack"
    for name, runtime, entry, data in (
        ("bigmod", "wasm", "big.wasm", big_module(8000)),
        ("bigcomp", "component", "big.wasm", big_component(8000)),
    ):
        (pack / name).mkdir(parents=True)
        (pack / name / entry).write_bytes(data)
        (pack / name / "skill.toml").write_text(
            f'name = "{name}"\nversion = "0.1.0"\ndescription = "Slow to compile."\n'
            f'runtime = "{runtime}"\nentry = "{entry}"\n'
            'input_schema = { type = "object" }\n'
            f"[limits]\ntimeout_ms = {TIMEOUT_MS}\n"
        )
    (pack / "bastion-pack.toml").write_text(
        'name = "slow"\nversion = "0.1.0"\nskills = ["bigmod", "bigcomp"]\n'
    )
    return pack


SCENARIO = """
    import json, os, sys
    from bastion import Kernel, load_policy

    pack, audit, isolation, first_wait = sys.argv[1:5]
    text = (f'[audit]\\npath = "{audit}"\\n'
            '[breaker]\\nfailures = 1\\ncodes = ["TIMEOUT", "INTERNAL"]\\n'
            f'[workers]\\nisolation = "{isolation}"\\ncount = 1\\n')
    out = {}
    with Kernel(load_policy(text=text), pack_paths=[pack], entry_points=False) as k:
        for name in ("bigmod", "bigcomp"):
            os.environ["BASTION_RUNNER_WAIT_S"] = first_wait
            out[name] = k.invoke(name, {}).to_dict()   # no prepare(): the first use compiles
            out[name + "_breaker"] = k.breaker_states()[name]
            os.environ["BASTION_RUNNER_WAIT_S"] = "600"
            out[name + "_again"] = k.invoke(name, {}).to_dict()
            out[name + "_breaker_again"] = k.breaker_states()[name]
    print(json.dumps(out))
"""


def run_case(tmp_path: Path, isolation: str, first_wait: str) -> dict[str, Any]:
    pack = make_pack(tmp_path)
    cache = tmp_path / "cache"  # empty: every module is compiled on its first use
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(SCENARIO),
            str(pack),
            str(tmp_path / "audit.jsonl"),
            isolation,
            first_wait,
        ],
        env={**os.environ, "BASTION_CACHE_DIR": str(cache)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_a_first_use_compile_longer_than_the_timeout_is_not_charged(
    tmp_path: Path, isolation: str
) -> None:
    out = run_case(tmp_path, isolation, "600")
    for name in ("bigmod", "bigcomp"):
        first = out[name]
        assert first["ok"] is True and first["output"] == {}, (name, first)
        # The call's wall time holds the compile, which is far past the timeout.
        assert first["duration_ms"] > TIMEOUT_MS, (name, first)
        assert out[name + "_breaker"] == "closed"
        again = out[name + "_again"]
        assert again["ok"] is True and again["output"] == {}, (name, again)


@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_a_compile_past_the_start_up_wait_is_not_ready_and_the_breaker_ignores_it(
    tmp_path: Path, isolation: str
) -> None:
    out = run_case(tmp_path, isolation, "0.05")
    for name in ("bigmod", "bigcomp"):
        first = out[name]
        assert first["ok"] is False, (name, first)
        assert first["error"]["code"] == "NOT_READY", (name, first)
        assert first["error"]["retryable"] is True
        assert out[name + "_breaker"] == "closed"  # failures = 1 would have opened it
        again = out[name + "_again"]  # the compile went on in the background
        assert again["ok"] is True and again["output"] == {}, (name, again)
        assert out[name + "_breaker_again"] == "closed"
