"""Kernel overhead: invoke of a trivial native skill vs a direct call; discovery of 50 packs.

Run on demand: ``.venv/bin/python bench/bench_kernel.py``. Prints figures and ratios; asserts
nothing. Discovery is measured in a fresh subprocess per run so that import caches do not help.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bastion import Kernel, hookimpl, load_policy, native_skill  # noqa: E402
from bastion.audit import NullAudit  # noqa: E402
from tests.sitebuilder import SiteBuilder, skill_toml  # noqa: E402


@native_skill(
    name="add",
    version="1.0.0",
    description="Add two numbers.",
    input_schema={
        "type": "object",
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"],
    },
)
def add(a: float, b: float) -> dict[str, float]:
    return {"sum": a + b}


class Plugin:
    @hookimpl
    def bastion_skills(self) -> list[Any]:
        return [add]


def timeit(fn: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e6)
    return out


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def bench_invoke() -> None:
    os.environ["BASTION_LOAD_PLUGINS"] = ""
    with Kernel(load_policy(text=""), plugins=[Plugin()], audit=NullAudit()) as k:
        for _ in range(200):
            k.invoke("add", {"a": 1, "b": 2})
        inv = timeit(lambda: k.invoke("add", {"a": 1, "b": 2}), 3000)
    direct = timeit(lambda: add.func(a=1, b=2), 3000)
    mi, md = statistics.median(inv), statistics.median(direct)
    print("kernel.invoke, trivial native skill (no audit I/O), 3000 calls")
    print(f"  invoke   median {mi:8.1f} us   p95 {pct(inv, 0.95):8.1f} us")
    print(f"  direct   median {md:8.2f} us   p95 {pct(direct, 0.95):8.2f} us")
    print(f"  added by the pipeline: {mi - md:.1f} us per call ({mi / md:.0f}x a direct call)")


def bench_discovery(n_packs: int = 50) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        site = SiteBuilder(Path(tmp) / "site")
        for i in range(n_packs):
            site.data_pack(
                f"gen-pack-{i}",
                f"gen_pack_{i}",
                f'name = "gen-{i}"\nversion = "1.0.0"\nskills = ["a", "b"]\n',
                {
                    "a": {"skill.toml": skill_toml(f"gen_{i}_a"), "skill.wasm": b"x"},
                    "b": {"skill.toml": skill_toml(f"gen_{i}_b"), "skill.wasm": b"x"},
                },
            )
        code = (
            "import time, json; t0 = time.perf_counter();"
            "from bastion import Kernel, load_policy; from bastion.audit import NullAudit;"
            "t1 = time.perf_counter();"
            "k = Kernel(load_policy(text=''), audit=NullAudit());"
            "t2 = time.perf_counter();"
            "print(json.dumps([len(k.skills()), t1 - t0, t2 - t1]))"
        )
        env = dict(os.environ, PYTHONPATH=str(site.root))
        env.pop("BASTION_LOAD_PLUGINS", None)
        runs = []
        for _ in range(5):
            out = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            )
            runs.append(json.loads(out.stdout))
        n = runs[0][0]
        imp = statistics.median(r[1] for r in runs) * 1000
        disc = statistics.median(r[2] for r in runs) * 1000
        print(f"\ndiscovery: {n_packs} generated packs ({n} skills incl. installed packs), 5 runs")
        print(f"  import bastion          median {imp:7.1f} ms")
        print(f"  Kernel() (discover+grant) median {disc:7.1f} ms  ({disc / n:.2f} ms per skill)")


def bench_wasm_invoke() -> None:
    """kernel.invoke of the echo WASI skill vs its executor vs bare wasmtime-py, same run."""
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_wasm import INPUT, bare_runner
    from bench_wasm import request as exec_request

    from tests.sandbox.guestbuild import GUESTS, build_c

    wasm = build_c(GUESTS / "echo.c")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "pack"
        (folder / "echo").mkdir(parents=True)
        entry = folder / "echo" / "skill.wasm"
        entry.write_bytes(wasm)
        (folder / "echo" / "skill.toml").write_text(
            'name = "echo"\nversion = "1.0.0"\ndescription = "echo"\nruntime = "wasm"\n'
            'entry = "skill.wasm"\ninput_schema = { type = "object" }\n'
        )
        (folder / "bastion-pack.toml").write_text(
            'name = "b"\nversion = "1.0.0"\nskills = ["echo"]\n'
        )
        args = json.loads(INPUT)
        with Kernel(
            load_policy(text=""), pack_paths=[folder], entry_points=False, audit=NullAudit()
        ) as k:
            ex = k.executors["wasm"]
            bare = bare_runner(wasm)
            runs = {
                "kernel.invoke": lambda: k.invoke("echo", args),
                "executor.execute": lambda: ex.execute(exec_request(entry)),
                "bare wasmtime-py": bare,
            }
            for fn in runs.values():
                for _ in range(200):
                    fn()
            # Interleave rounds so that machine noise hits all three alike.
            samples: dict[str, list[float]] = {name: [] for name in runs}
            for _ in range(5):
                for name, fn in runs.items():
                    samples[name] += timeit(fn, 300)
    print("\necho WASI skill, warm cache, 1500 calls each, interleaved (no audit I/O)")
    med = {name: statistics.median(xs) for name, xs in samples.items()}
    for name, xs in samples.items():
        print(
            f"  {name:18s} median {med[name] / 1000:6.3f} ms   p95 {pct(xs, 0.95) / 1000:6.3f} ms"
        )
    bare_m = med["bare wasmtime-py"]
    print(
        f"  ratio kernel.invoke / bare: {med['kernel.invoke'] / bare_m:.2f}x;  executor / bare: "
        f"{med['executor.execute'] / bare_m:.2f}x;  kernel's own steps: "
        f"{(med['kernel.invoke'] - med['executor.execute']):.0f} us"
    )


if __name__ == "__main__":
    bench_invoke()
    bench_wasm_invoke()
    bench_discovery()
