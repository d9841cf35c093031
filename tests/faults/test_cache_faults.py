"""The caches under faults, in process isolation (the default) and in thread isolation.

While a kernel runs, another process deletes the cache folder, empties it, replaces its compiled
entries with corrupt files, replaces it with a file, or loosens its permissions. In process
mode the workers only load (their Landlock rules are bound to the folder they started with);
a worker replaced afterwards (here: one killed at a deadline) lacks the runner, the kernel
repairs the disk and recycles its workers, and the caller sees a normal result; a repair past
the bounded start-up wait is ``NOT_READY`` and the breaker ignores it. An unsafe folder (a
file, loose permissions, another owner) is never repaired: it is ``CACHE_UNSAFE``, a typed
error in embedding and exit 2 in the CLI. In thread mode the kernel's memory serves.

Each scenario runs in a subprocess with its own ``BASTION_CACHE_DIR``, seeded with only the
built runner and its compiled form, so only the deliberate rebuild costs."""

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

SKILL = 'def run(name: str) -> str:\n    """Greet someone."""\n    return "hi " + name\n'
NAP = (
    'import time\n\n\ndef run() -> str:\n    """Sleep past the deadline."""\n'
    '    time.sleep(60)\n    return "late"\n'
)


def _skill(pack: Path, name: str, source: str, schema: str, timeout_ms: int) -> None:
    (pack / name).mkdir(parents=True)
    # Schemas declared, so discovery needs no runner and the first *call* meets the cache.
    (pack / name / "skill.toml").write_text(
        f'name = "{name}"\nversion = "0.1.0"\ndescription = "Fault probe."\n'
        'runtime = "python"\nentry = "skill.py"\n'
        f"input_schema = {schema}\n"
        'output_schema = { type = "string" }\n'
        f"[limits]\ntimeout_ms = {timeout_ms}\n"
    )
    (pack / name / "skill.py").write_text(source)


def make_pack(root: Path, timeout_ms: int = 1000) -> Path:
    pack = root / "pack"
    pack.mkdir()
    (pack / "bastion-pack.toml").write_text(
        'name = "faults"\nversion = "0.1.0"\nskills = ["hello", "nap"]\n'
    )
    schema = '{ type = "object", properties = { name = { type = "string" } } }'
    _skill(pack, "hello", SKILL, schema, timeout_ms)
    _skill(pack, "nap", NAP, '{ type = "object" }', 300)
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
    """A private cache holding only the built runner and its verified compiled form."""
    from bastion.sandbox.cache import default_cache
    from bastion.sandbox.runner_build import ensure_runner, load_runner, runner_sha256

    load_runner()  # the shared test cache holds the runner from now on
    runner, cache = ensure_runner(), default_cache()
    key = cache.key_for_digest("component", runner_sha256(runner))
    dest = tmp_path / "cache"
    (dest / "runner").mkdir(parents=True, mode=0o700)
    os.chmod(dest, 0o700)
    for src in (runner, runner.with_name(runner.name + ".sha256")):
        shutil.copy2(src, dest / "runner" / src.name)
    for src in (cache.artifact_path(key), cache.digest_path(key)):
        shutil.copy2(src, dest / src.name)
    return dest


FAULTS = {
    "deleted": "shutil.rmtree(cache)",
    "emptied": "[shutil.rmtree(p) if p.is_dir() else p.unlink() for p in cache.iterdir()]",
    # A new file with the same size and a flipped byte in the middle (a bad copy or restore;
    # a file truncated in place under a process that maps it is a SIGBUS, docs/sandbox.md).
    "corrupted": (
        "for art in cache.glob('*.cwasm'):\n"
        "    data = bytearray(art.read_bytes()); data[len(data) // 2] ^= 0xFF\n"
        "    tmp = art.with_suffix('.bad'); tmp.write_bytes(bytes(data)); os.replace(tmp, art)"
    ),
    "file": "shutil.rmtree(cache); cache.write_text('not a folder')",
    "loose": "os.chmod(cache, 0o777)",
}
REPAIRED = ("deleted", "emptied", "corrupted")
UNSAFE = ("file", "loose")

SCENARIO = """
    import json, os, subprocess, sys
    from pathlib import Path
    from bastion import Kernel, load_policy
    from bastion.cachedir import CacheDirError

    pack, audit, cache, isolation, fault_code = sys.argv[1:6]
    text = (f'[audit]\\npath = "{audit}"\\n'
            '[breaker]\\nfailures = 1\\ncodes = ["TIMEOUT", "INTERNAL", "SKILL_CRASHED"]\\n'
            f'[workers]\\nisolation = "{isolation}"\\ncount = 1\\n')

    def kernel():
        return Kernel(load_policy(text=text), pack_paths=[pack], entry_points=False)

    def call(k, name, args):
        try:
            return k.invoke(name, args).to_dict()
        except CacheDirError as exc:  # the typed error an embedder gets
            return {"raised": exc.code, "message": str(exc)}

    out = {}
    k = kernel()
    out["warm"] = call(k, "hello", {"name": "a"})
    fault = "import os, shutil, sys\\nfrom pathlib import Path\\ncache = Path(sys.argv[1])\\n"
    subprocess.run([sys.executable, "-c", fault + fault_code, cache], check=True)
    if isolation == "process":
        # A guest blocked in sleep: its worker is killed at the deadline and replaced by one
        # that starts on the damaged cache (as after any timeout, crash or cancellation).
        out["nap"] = call(k, "nap", {})
        if sys.argv[6] == "short_wait":
            os.environ["BASTION_RUNNER_WAIT_S"] = "0.2"
            out["not_ready"] = call(k, "hello", {"name": "n"})
            out["breaker"] = k.breaker_states()["hello"]
            os.environ["BASTION_RUNNER_WAIT_S"] = "900"
    out["after"] = call(k, "hello", {"name": "b"})
    out["recycled"] = k.workers.stats.recycled if k.workers is not None else None
    k.close()
    with kernel() as k2:  # a new kernel in the same process: new workers, the old memory
        out["new_kernel"] = call(k2, "hello", {"name": "c"})
    out["cache_is_dir"] = Path(cache).is_dir()
    print(json.dumps(out))
"""


def run_fault(tmp_path: Path, cache: Path, isolation: str, fault: str) -> dict[str, Any]:
    pack = make_pack(tmp_path)
    wait = "short_wait" if fault == "emptied" else "default_wait"
    args = [str(pack), str(tmp_path / "a.jsonl"), str(cache), isolation, FAULTS[fault], wait]
    return child(SCENARIO, args, {"BASTION_CACHE_DIR": str(cache)}, timeout=1200)


def ok(result: dict[str, Any], output: str) -> bool:
    return result.get("ok") is True and result.get("output") == output


@pytest.mark.slow
@pytest.mark.parametrize("fault", REPAIRED)
def test_a_damaged_cache_is_repaired_under_running_workers(
    tmp_path: Path, warm_cache: Path, fault: str
) -> None:
    out = run_fault(tmp_path, warm_cache, "process", fault)
    assert ok(out["warm"], "hi a"), out
    assert out["nap"]["error"]["code"] == "TIMEOUT", out["nap"]
    if fault == "emptied":  # the runner is rebuilt: longer than a 0.2 s start-up wait
        assert out["not_ready"]["error"]["code"] == "NOT_READY", out["not_ready"]
        assert out["not_ready"]["error"]["retryable"] is True
        assert out["breaker"] == "closed"  # failures = 1, and NOT_READY did not count
    assert ok(out["after"], "hi b"), out["after"]
    assert out["recycled"] >= 1  # the workers bound to the old folder were replaced
    assert ok(out["new_kernel"], "hi c"), out["new_kernel"]
    assert out["cache_is_dir"] is True
    assert os.stat(warm_cache).st_mode & 0o777 == 0o700


@pytest.mark.slow
@pytest.mark.parametrize("fault", UNSAFE)
def test_an_unsafe_cache_met_by_running_workers_is_cache_unsafe(
    tmp_path: Path, warm_cache: Path, fault: str
) -> None:
    out = run_fault(tmp_path, warm_cache, "process", fault)
    assert ok(out["warm"], "hi a"), out
    for step in ("after", "new_kernel"):
        assert out[step].get("raised") == "CACHE_UNSAFE", out[step]
        assert str(warm_cache) in out[step]["message"]  # names the folder (the operator's)
    assert warm_cache.is_dir() is (fault == "loose")  # never deleted or "fixed"


@pytest.mark.parametrize("fault", [*REPAIRED, *UNSAFE])
def test_in_thread_mode_the_kernels_memory_serves(
    tmp_path: Path, warm_cache: Path, fault: str
) -> None:
    out = run_fault(tmp_path, warm_cache, "thread", fault)
    for step, output in (("warm", "hi a"), ("after", "hi b"), ("new_kernel", "hi c")):
        assert ok(out[step], output), (step, out[step])


COLD = """
    import json, os, sys
    from pathlib import Path
    from bastion import Kernel, load_policy

    pack, audit, cache = sys.argv[1:4]
    text = (f'[audit]\\npath = "{audit}"\\n'
            '[breaker]\\nfailures = 1\\ncodes = ["TIMEOUT", "INTERNAL"]\\n')
    out = {}
    os.environ["BASTION_RUNNER_WAIT_S"] = "0.2"
    with Kernel(load_policy(text=text), pack_paths=[pack], entry_points=False) as k:
        out["cold"] = k.invoke("hello", {"name": "c"}).to_dict()
        out["breaker"] = k.breaker_states()["hello"]
        os.environ["BASTION_RUNNER_WAIT_S"] = "900"
        out["rebuilt"] = k.invoke("hello", {"name": "d"}).to_dict()
    out["cache_back"] = Path(cache).is_dir()
    print(json.dumps(out))
"""


@pytest.mark.slow
def test_a_cold_cache_is_not_ready_then_built_and_the_build_never_times_a_call_out(
    tmp_path: Path,
) -> None:
    pack = make_pack(tmp_path, timeout_ms=1000)  # far less than a build: must not count
    cache = tmp_path / "cold"  # a fresh process on an empty cache: the runner is built
    args = [str(pack), str(tmp_path / "a.jsonl"), str(cache)]
    out = child(COLD, args, {"BASTION_CACHE_DIR": str(cache)}, timeout=1200)
    cold = out["cold"]["error"]
    assert cold is not None and cold["code"] == "NOT_READY" and cold["retryable"] is True
    assert out["breaker"] == "closed"  # NOT_READY says nothing about the skill
    assert ok(out["rebuilt"], "hi d"), out["rebuilt"]
    assert out["cache_back"] is True


CORRUPT = """
    import json, sys
    from pathlib import Path
    from bastion import Kernel, load_policy

    pack, audit, cache, isolation = sys.argv[1:5]
    for art in Path(cache).glob("*.cwasm"):
        art.write_bytes(art.read_bytes()[: 1000])   # every compiled entry truncated on disk
    text = f'[audit]\\npath = "{audit}"\\n[workers]\\nisolation = "{isolation}"\\n'
    with Kernel(load_policy(text=text), pack_paths=[pack], entry_points=False) as k:
        print(json.dumps(k.invoke("hello", {"name": "d"}).to_dict()))
"""


@pytest.mark.slow
@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_a_cache_truncated_before_start_is_recompiled(
    tmp_path: Path, warm_cache: Path, isolation: str
) -> None:
    pack = make_pack(tmp_path)
    res = child(
        CORRUPT,
        [str(pack), str(tmp_path / "a.jsonl"), str(warm_cache), isolation],
        {"BASTION_CACHE_DIR": str(warm_cache)},
        timeout=900,
    )
    assert ok(res, "hi d"), res


CLI = [sys.executable, "-m", "bastion.cli"]


def _unsafe(folder: Path, how: str) -> None:
    if how == "file":
        folder.write_text("not a folder\n")
        return
    folder.mkdir(mode=0o700)
    if how == "loose":
        os.chmod(folder, 0o777)
    else:
        os.chown(folder, 65534, 65534)


@pytest.mark.parametrize(
    "how",
    [
        "loose",
        "file",
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
    pol.write_text(f'[audit]\npath = "{tmp_path / "a.jsonl"}"\n')  # default: process isolation
    proc = subprocess.run(
        [*CLI, "--policy", str(pol), "--pack", str(pack), "run", "hello", "--input", "{}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "cache" in proc.stderr and str(bad) in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    embed = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                from bastion import Kernel, load_policy
                from bastion.cachedir import CacheDirError
                try:
                    k = Kernel(load_policy({str(pol)!r}), pack_paths=[{str(pack)!r}],
                               entry_points=False)
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
    assert (bad.is_file() if how == "file" else bad.is_dir()) is True  # left as it was


STARTUP = """
    import json, sys
    from pathlib import Path
    from bastion import Kernel, load_policy
    from bastion.sandbox.cache import default_cache

    pack, isolation = sys.argv[1:3]
    text = f'[workers]\\nisolation = "{isolation}"\\ncount = 1\\n'
    with Kernel(load_policy(text=text), pack_paths=[pack], entry_points=False) as k:
        k.prepare(["hello"])
        result = k.invoke("hello", {"name": "a"}).to_dict()
        cache = default_cache()
        maps = Path("/proc/self/maps").read_text()
        mapped = sorted({line.split()[-1] for line in maps.splitlines()
                         if line.split()[-1].endswith(".cwasm")})
        print(json.dumps({"result": result, "disk_loads": cache.disk_loads,
                          "compiles": cache.compiles, "mapped": mapped}))
"""


def run_startup(tmp_path: Path, cache: Path, isolation: str) -> dict[str, Any]:
    pack = make_pack(tmp_path)
    return child(STARTUP, [str(pack), isolation], {"BASTION_CACHE_DIR": str(cache)}, timeout=600)


def test_a_warm_process_mode_kernel_never_loads_the_runner_itself(
    tmp_path: Path, warm_cache: Path
) -> None:
    """The worker loads and verifies the compiled runner; the kernel only checks it is there."""
    out = run_startup(tmp_path, warm_cache, "process")
    assert ok(out["result"], "hi a"), out
    assert (out["disk_loads"], out["compiles"], out["mapped"]) == (0, 0, []), out


def test_in_thread_mode_the_kernel_loads_the_runner_from_the_cache(
    tmp_path: Path, warm_cache: Path
) -> None:
    out = run_startup(tmp_path, warm_cache, "thread")
    assert ok(out["result"], "hi a"), out
    assert (out["disk_loads"], out["compiles"]) == (1, 0), out
    assert len(out["mapped"]) == 1 and out["mapped"][0].startswith(str(warm_cache)), out


@pytest.mark.parametrize("fault", ["corrupted", "emptied_entries"])
def test_an_entry_damaged_before_a_process_mode_kernel_starts_is_repaired(
    tmp_path: Path, warm_cache: Path, fault: str
) -> None:
    """The kernel no longer verifies the runner's entry itself: the worker's load finds the
    damage, the kernel compiles a new entry, and the first call succeeds."""
    for art in warm_cache.glob("*.cwasm"):
        if fault == "corrupted":
            data = bytearray(art.read_bytes())
            data[len(data) // 2] ^= 0xFF
            art.write_bytes(bytes(data))
        else:
            art.unlink()
    out = run_startup(tmp_path, warm_cache, "process")
    assert ok(out["result"], "hi a"), out
    assert out["compiles"] == 1, out  # repaired once, by the kernel
    assert out["disk_loads"] == 0, out  # the damaged entry was never loaded by the kernel


DERIVING = """
    import json, sys
    from bastion import Kernel, load_policy

    pack, isolation = sys.argv[1:3]
    text = f'[workers]\\nisolation = "{isolation}"\\ncount = 1\\n'
    with Kernel(load_policy(text=text), pack_paths=[pack], entry_points=False) as k:
        st = {s.name: s for s in k.skills()}.get("greet")
        if st is None:
            print(json.dumps({"problems": [str(p) for p in k.problems]})); sys.exit(0)
        status = {"usable": st.usable, "reasons": list(st.grant.reasons)}
        result = k.invoke("greet", {"name": "a"}).to_dict()
        print(json.dumps({"status": status, "result": result}))
"""


def make_deriving_pack(root: Path) -> Path:
    """A Python skill without declared schemas: discovery derives them in the sandbox."""
    pack = root / "dpack"
    (pack / "greet").mkdir(parents=True)
    (pack / "bastion-pack.toml").write_text(
        'name = "deriving"\nversion = "0.1.0"\nskills = ["greet"]\n'
    )
    (pack / "greet" / "skill.toml").write_text(
        'name = "greet"\nversion = "0.1.0"\ndescription = "Greets."\n'
        'runtime = "python"\nentry = "skill.py"\n'
    )
    (pack / "greet" / "skill.py").write_text(SKILL)
    return pack


@pytest.mark.parametrize("fault", ["entry_missing", "entry_corrupted"])
def test_derivation_in_a_worker_compiles_or_repairs_the_runner_entry(
    tmp_path: Path, warm_cache: Path, fault: str
) -> None:
    """The derivation worker only loads: with the runner built but its compiled entry missing
    (a runner change, a cold cache) or corrupt, the kernel compiles or repairs the entry and
    the skill is derived and granted (it was denied with 'the compile cache lacks...')."""
    for art in warm_cache.glob("*.cwasm"):
        if fault == "entry_missing":
            art.unlink()
        else:
            data = bytearray(art.read_bytes())
            data[len(data) // 2] ^= 0xFF
            art.write_bytes(bytes(data))
    pack = make_deriving_pack(tmp_path)
    out = child(
        DERIVING, [str(pack), "process"], {"BASTION_CACHE_DIR": str(warm_cache)}, timeout=900
    )
    assert "problems" not in out and out["status"]["usable"] is True, out
    assert ok(out["result"], "hi a"), out
