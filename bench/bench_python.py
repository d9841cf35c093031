"""Python skills: per-call cost in the runner component vs a subprocess vs in-process.

    .venv/bin/python bench/bench_python.py [--calls N] [--cold]

Measures (figures go to bench/README.md, "Python skills"):

- per call, hello-world skill, fresh store + instance each call, warm cache: p50/p95 of
  ``PythonExecutor.execute`` against ``subprocess.run([python, skill.py])`` and an in-process
  call of the same function;
- ``--cold``: runner build (componentize-py) and first compile, in a throw-away cache dir;
- peak RSS over 100 sequential calls (must not grow per call).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HELLO = 'def run(name: str = "world"):\n    return {"greeting": f"hello {name}"}\n'
MAIN = (
    '\nif __name__ == "__main__":\n    import json, sys\n'
    "    print(json.dumps(run(**json.loads(sys.argv[1]))))\n"
)


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def _row(name: str, xs: list[float]) -> str:
    return f"| {name:<44} | {_pct(xs, 50) * 1e3:8.3f} ms | {_pct(xs, 95) * 1e3:8.3f} ms |"


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _request(entry: Path, inp: dict[str, Any]) -> Any:
    import structlog

    from bastion.executor import Capabilities, ExecutionRequest, Limits

    limits = Limits(timeout_ms=10_000)
    return ExecutionRequest(
        skill="hello",
        version="0.1.0",
        runtime="python",
        entry=entry,
        folder=entry.parent,
        input=inp,
        input_json=json.dumps(inp),
        caps=Capabilities(),
        limits=limits,
        deadline=time.monotonic() + 10,
        invocation_id="bench",
        logger=structlog.get_logger("bench"),
        audit=lambda kind, fields: None,
    )


def cold() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["BASTION_CACHE_DIR"] = tmp
        from bastion.sandbox import runner_build

        t0 = time.perf_counter()
        runner_build.ensure_runner()
        t1 = time.perf_counter()
        runner_build.load_runner()
        t2 = time.perf_counter()
        print(f"runner build (componentize-py): {t1 - t0:.2f} s")
        print(f"first compile (+ cache write):  {t2 - t1:.2f} s")


def warm(calls: int) -> None:
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    from bastion.sandbox import runner_build
    from bastion.sandbox.cache import default_cache
    from bastion.sandbox.python_exec import PythonExecutor

    t0 = time.perf_counter()
    runner_build.load_runner()
    print(
        f"runner load in a new process (built + compiled cache hit): "
        f"{(time.perf_counter() - t0) * 1e3:.0f} ms (disk loads: {default_cache().disk_loads})"
    )
    ex = PythonExecutor()
    with tempfile.TemporaryDirectory() as tmp:
        entry = Path(tmp) / "skill.py"
        entry.write_text(HELLO)
        script = Path(tmp) / "script.py"
        script.write_text(HELLO + MAIN)
        inp = {"name": "bench"}
        for _ in range(10):
            ex.execute(_request(entry, inp))
        sandboxed = []
        for _ in range(calls):
            req = _request(entry, inp)
            t = time.perf_counter()
            ex.execute(req)
            sandboxed.append(time.perf_counter() - t)
        sub = []
        for _ in range(max(20, calls // 10)):
            t = time.perf_counter()
            subprocess.run(
                [sys.executable, str(script), json.dumps(inp)], check=True, capture_output=True
            )
            sub.append(time.perf_counter() - t)
        ns: dict[str, Any] = {}
        exec(compile(HELLO, "skill.py", "exec"), ns)  # our own benchmark code, not a skill
        inproc = []
        for _ in range(calls):
            t = time.perf_counter()
            json.dumps(ns["run"](**json.loads(json.dumps(inp))))
            inproc.append(time.perf_counter() - t)
        print("| path                                         | p50         | p95         |")
        print("|----------------------------------------------|-------------|-------------|")
        print(_row("PythonExecutor.execute (fresh instance)", sandboxed))
        print(_row("subprocess.run([python, skill.py])", sub))
        print(_row("in-process call (json in/out)", inproc))

        rss = [_rss_mib()]
        for i in range(100):
            ex.execute(_request(entry, inp))
            if i % 10 == 9:
                rss.append(_rss_mib())
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"RSS over 100 sequential calls (MiB, every 10): {[round(r) for r in rss]}; "
            f"peak {peak:.0f} MiB"
        )
    ex.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--cold", action="store_true", help="time build + first compile")
    args = ap.parse_args()
    if args.cold:
        cold()
    else:
        warm(args.calls)


if __name__ == "__main__":
    main()
