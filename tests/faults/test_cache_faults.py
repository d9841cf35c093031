"""The caches under faults: a cache folder deleted while the process runs is re-created and the
runner rebuilt; building never counts against a call's timeout (a bounded start-up wait answers
``NOT_READY`` and the breaker ignores it); an unsafe folder is ``CACHE_UNSAFE`` and exit 2.

Each scenario runs in a subprocess with its own ``BASTION_CACHE_DIR`` (the process-wide cache
and runner are per process), seeded from the test cache so only the deliberate rebuild costs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from bastion.cachedir import default_cache_root

SKILL = 'def run(name: str) -> str:\n    """Greet someone."""\n    return "hi " + name\n'


def make_pack(root: Path, timeout_ms: int = 1000) -> Path:
    pack = root / "pack"
    (pack / "hello").mkdir(parents=True)
    (pack / "bastion-pack.toml").write_text(
        'name = "faults"\nversion = "0.1.0"\nskills = ["hello"]\n'
    )
    (pack / "hello" / "skill.toml").write_text(
        'name = "hello"\nversion = "0.1.0"\ndescription = "Greet."\nruntime = "python"\n'
        f'entry = "skill.py"\n[limits]\ntimeout_ms = {timeout_ms}\n'
    )
    (pack / "hello" / "skill.py").write_text(SKILL)
    return pack


def child(script: str, args: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture
def warm_cache(tmp_path: Path) -> Path:
    """A private copy of the test cache (the runner already built and compiled there)."""
    from bastion.sandbox.runner_build import load_runner

    load_runner()  # the shared test cache holds the runner from now on
    dest = tmp_path / "cache"
    shutil.copytree(default_cache_root(), dest, symlinks=False)
    os.chmod(dest, 0o700)
    return dest


SCENARIO = """
    import json, os, subprocess, sys
    from pathlib import Path
    from bastion import Kernel, load_policy

    pack, audit, cache, step = sys.argv[1:5]
    text = (f'[audit]\\npath = "{audit}"\\n'
            '[breaker]\\nfailures = 1\\ncodes = ["TIMEOUT", "INTERNAL"]\\n')

    def kernel():
        return Kernel(load_policy(text=text), pack_paths=[pack], entry_points=False)

    out = {}
    if step == "delete":
        with kernel() as k:
            out["warm"] = k.invoke("hello", {"name": "a"}).to_dict()
        subprocess.run(["rm", "-rf", cache], check=True)  # from another process, while running
        with kernel() as k:  # a new kernel (new executors) in the same process
            out["after_delete"] = k.invoke("hello", {"name": "b"}).to_dict()
    else:  # a fresh process on the emptied cache: the runner must be built again
        os.environ["BASTION_RUNNER_WAIT_S"] = "0.2"
        with kernel() as k:
            out["cold"] = k.invoke("hello", {"name": "c"}).to_dict()
            out["breaker"] = k.breaker_states()["hello"]
            os.environ["BASTION_RUNNER_WAIT_S"] = "900"
            out["rebuilt"] = k.invoke("hello", {"name": "d"}).to_dict()
        out["cache_back"] = Path(cache).is_dir()
    print(json.dumps(out))
"""


@pytest.mark.slow
def test_deleted_cache_is_rebuilt_and_the_build_never_times_a_call_out(
    tmp_path: Path, warm_cache: Path
) -> None:
    pack = make_pack(tmp_path, timeout_ms=1000)  # far less than a build: must not count
    args = [str(pack), str(tmp_path / "a.jsonl"), str(warm_cache)]
    env = {"BASTION_CACHE_DIR": str(warm_cache)}
    out = child(SCENARIO, [*args, "delete"], env, timeout=600)
    assert out["warm"]["ok"] is True
    assert out["after_delete"]["ok"] is True, out["after_delete"]
    out = child(SCENARIO, [*args, "cold"], env, timeout=1200)
    cold = out["cold"]["error"]
    assert cold is not None and cold["code"] == "NOT_READY" and cold["retryable"] is True
    assert out["breaker"] == "closed"  # NOT_READY says nothing about the skill
    rebuilt = out["rebuilt"]
    assert rebuilt["ok"] is True and rebuilt["output"] == "hi d", rebuilt
    assert out["cache_back"] is True


CORRUPT = """
    import json, sys
    from pathlib import Path
    from bastion import Kernel, load_policy

    pack, audit, cache = sys.argv[1], sys.argv[2], sys.argv[3]
    for art in Path(cache).glob("*.cwasm"):
        art.write_bytes(art.read_bytes()[: 1000])   # every compiled entry truncated on disk
    k = Kernel(load_policy(text=f'[audit]\\npath = "{audit}"\\n'), pack_paths=[pack],
               entry_points=False)
    print(json.dumps(k.invoke("hello", {"name": "d"}).to_dict()))
"""


@pytest.mark.slow
def test_a_corrupted_compile_cache_is_recompiled(tmp_path: Path, warm_cache: Path) -> None:
    pack = make_pack(tmp_path)
    res = child(
        CORRUPT,
        [str(pack), str(tmp_path / "a.jsonl"), str(warm_cache)],
        {"BASTION_CACHE_DIR": str(warm_cache)},
        timeout=900,
    )
    assert res["ok"] is True and res["output"] == "hi d"


CLI = [sys.executable, "-m", "bastion.cli"]


def _unsafe(folder: Path, how: str) -> None:
    folder.mkdir(mode=0o700)
    if how == "loose":
        os.chmod(folder, 0o777)
    else:
        os.chown(folder, 65534, 65534)


@pytest.mark.parametrize(
    "how",
    [
        "loose",
        pytest.param(
            "foreign",
            marks=pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root"),
        ),
    ],
)
def test_an_unsafe_cache_folder_is_exit_2_and_a_typed_error(tmp_path: Path, how: str) -> None:
    pack = make_pack(tmp_path)
    bad = tmp_path / "badcache"
    _unsafe(bad, how)
    env = {**os.environ, "BASTION_CACHE_DIR": str(bad)}
    pol = tmp_path / "bastion.toml"
    pol.write_text(f'[audit]\npath = "{tmp_path / "a.jsonl"}"\n')
    proc = subprocess.run(
        [*CLI, "--policy", str(pol), "--pack", str(pack), "run", "hello", "--input", "{}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "cache directory" in proc.stderr and "Traceback" not in proc.stderr
    embed = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                from bastion import Kernel, load_policy
                from bastion.cachedir import CacheDirError
                k = Kernel(load_policy({str(pol)!r}), pack_paths=[{str(pack)!r}],
                           entry_points=False)
                try:
                    k.invoke("hello", {{"name": "x"}})
                except CacheDirError as exc:
                    print(exc.code)
            """),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert embed.stdout.strip().splitlines()[-1:] == ["CACHE_UNSAFE"], embed.stderr[-2000:]
