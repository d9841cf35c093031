"""End to end: ``bastion run calc`` as a whole process (warm cache), and where the time goes.

Run on demand: ``.venv/bin/python bench/bench_cli.py``. Prints figures; asserts nothing.
Bytecode caching is left on (``PYTHONDONTWRITEBYTECODE`` unset), as on an installed system.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent

PHASES = r"""
import json, sys, time
t0 = time.perf_counter()
import bastion
from bastion.kernel import Kernel
from bastion.policy import load_policy
t1 = time.perf_counter()
import wasmtime, wasmtime.component
t2 = time.perf_counter()
k = Kernel(load_policy())
t3 = time.perf_counter()
k.prepare(["calc"])
t4 = time.perf_counter()
r = k.invoke("calc", {"expression": "1+1"})
t5 = time.perf_counter()
r2 = k.invoke("calc", {"expression": "2+2"})
t6 = time.perf_counter()
k.close()
t7 = time.perf_counter()
assert r.ok and r2.ok, (r, r2)
print(json.dumps({"import bastion": t1 - t0, "import wasmtime": t2 - t1,
                  "discover + grant (Kernel())": t3 - t2, "load cached runner": t4 - t3,
                  "first call": t5 - t4, "second call": t6 - t5, "close": t7 - t6}))
"""


def main(runs: int = 7) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cmd = [str(BIN / "bastion"), "run", "calc", "--input", '{"expression": "1+1"}', "--json"]
    subprocess.run(cmd, env=env, capture_output=True, check=True)  # warm caches, write .pyc
    walls = []
    for _ in range(runs):
        t = time.perf_counter()
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        walls.append(time.perf_counter() - t)
        assert json.loads(out.stdout)["ok"]
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
    bare = time.perf_counter() - t
    print(f"`bastion run calc --json`, whole process, warm cache, {runs} runs")
    print(
        f"  median {statistics.median(walls) * 1000:6.0f} ms   min {min(walls) * 1000:6.0f} ms"
        f"   (python -c pass: {bare * 1000:.0f} ms)"
    )
    phases: dict[str, list[float]] = {}
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", PHASES], env=env, capture_output=True, text=True, check=True
        )
        for name, secs in json.loads(out.stdout).items():
            phases.setdefault(name, []).append(secs)
    print("where the time goes (median of the same steps in one process):")
    for name, xs in phases.items():
        print(f"  {name:28s} {statistics.median(xs) * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
