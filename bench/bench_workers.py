"""Execution workers against today's thread mode, in one run (``.venv/bin/python
bench/bench_workers.py [--quick]``). Prints figures and ratios; asserts nothing.

Sections: Python hello per call (``kernel.invoke``, fresh instance every call); a trivial WASM
skill through ``kernel.invoke`` against bare wasmtime-py and the Extism Python SDK's fresh
plugin + call (the plugin is built here from WAT); calls/s on a CPU-bound Python skill at 1, 2
and 4 workers (threads in thread mode); timeout overshoot of a spinning and of a sleeping
skill, idle and with a busy host thread; worker start time and RSS per worker; what an idle
worker costs (CPU and wake-ups while no call runs: the epoch ticker sleeps then). Each section
says its target (issue 13) and whether this run met it. Extism comes with the ``dev`` extra.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import wasmtime  # noqa: E402

from bastion import Kernel, load_policy  # noqa: E402
from bastion.sandbox.engine import get_engine  # noqa: E402
from tests.sandbox.guestbuild import build_wat  # noqa: E402

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
QUICK = "--quick" in sys.argv

TRIVIAL_WAT = """
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "{}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 2))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"""
EXTISM_WAT = """
(module
  (memory (export "memory") 1)
  (func (export "run") (result i32) (i32.const 0)))
"""
SKILLS: dict[str, tuple[str, str, str]] = {
    "hello": ("python", "def run(name: str = 'w') -> dict:\n    return {'hi': name}\n", ""),
    "cpu": (
        "python",
        "def run() -> dict:\n    return {'s': sum(i * i for i in range(150_000))}\n",
        "",
    ),
    "spin": ("python", "def run() -> dict:\n    while True:\n        pass\n", "timeout_ms = 100"),
    "sleepy": (
        "python",
        "import time\n\ndef run() -> dict:\n    time.sleep(1.0)\n    return {}\n",
        "timeout_ms = 100",
    ),
    "trivial": ("wasm", TRIVIAL_WAT, ""),
}


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * q))] * 1000


def p50(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def timeit(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def write_pack(root: Path, pack: str, skills: dict[str, tuple[str, str, str]]) -> Path:
    """A pack folder of ``skills`` (name -> runtime, Python source or WAT, ``[limits]`` lines)."""
    for name, (runtime, source, limits) in skills.items():
        d = root / name
        d.mkdir(parents=True)
        entry = "skill.wasm" if runtime == "wasm" else "skill.py"
        if runtime == "wasm":
            (d / entry).write_bytes(build_wat(source))
        else:
            (d / entry).write_text(source)
        (d / "skill.toml").write_text(
            f'name = "{name}"\nversion = "1.0.0"\ndescription = "{name}"\n'
            f'runtime = "{runtime}"\nentry = "{entry}"\ninput_schema = {{ type = "object" }}\n'
            + (f"[limits]\n{limits}\n" if limits else "")
        )
    names = ", ".join(f'"{n}"' for n in skills)
    (root / "bastion-pack.toml").write_text(
        f'name = "{pack}"\nversion = "1.0.0"\nskills = [{names}]\n'
    )
    return root


def make_pack(root: Path) -> Path:
    return write_pack(root, "bench", SKILLS)


@contextlib.contextmanager
def kernel(pack: Path, tmp: Path, workers: str) -> Iterator[Kernel]:
    pol = load_policy(
        text=f"[audit]\nenabled = false\n[kernel]\nmax_workers = 16\n[workers]\n{workers}\n"
    )
    k = Kernel(pol, pack_paths=[pack], entry_points=False)
    try:
        k.prepare()
        for name in SKILLS:
            if name not in ("spin", "sleepy"):
                k.invoke(name, {})
        yield k
    finally:
        k.close()


@contextlib.contextmanager
def busy_thread() -> Iterator[None]:
    """A host thread that holds the GIL whenever it can (pure-Python loop)."""
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    t = threading.Thread(target=spin, name="bench-busy")
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()


def invoke_ok(k: Kernel, name: str) -> None:
    r = k.invoke(name, {})
    if not r.ok:
        raise RuntimeError(f"{name}: {r.error}")


CPU_PER_CALL: dict[str, tuple[float, float]] = {}
"""Skill -> (kernel process, all workers) CPU ms per call, back to back, process mode."""


def section_latency(k: Kernel, n: int) -> dict[str, tuple[float, float]]:
    """Back to back, and spaced by 5 ms (a worker prewarms the next instance after it
    answers; back to back, the next call may wait for that)."""
    out = {}
    for name in ("hello", "trivial"):
        pids = k.workers.pids() if k.workers is not None else []
        c0 = (_cpu_s(os.getpid()), sum(_cpu_s(p) for p in pids))
        samples = timeit(lambda name=name: invoke_ok(k, name), n)  # type: ignore[misc]
        if pids and pids == k.workers.pids():  # type: ignore[union-attr]
            c1 = (_cpu_s(os.getpid()), sum(_cpu_s(p) for p in pids))
            CPU_PER_CALL[name] = ((c1[0] - c0[0]) * 1000 / n, (c1[1] - c0[1]) * 1000 / n)
        out[name] = (p50(samples), pct(samples, 0.95))
        spaced = []
        for _ in range(n):
            time.sleep(0.005)
            t = time.perf_counter()
            invoke_ok(k, name)
            spaced.append(time.perf_counter() - t)
        out[name + " (spaced)"] = (p50(spaced), pct(spaced, 0.95))
    return out


def all_ready(k: Kernel) -> None:
    """Wait until every worker of the pool is ready (a killed one is being replaced)."""
    pool = k.workers
    if pool is None:
        return
    end = time.monotonic() + 30
    while time.monotonic() < end and len(pool.reports()) < len(pool.pids()):
        time.sleep(0.01)


def bare_wasmtime(n: int) -> float:
    engine = get_engine()
    module = wasmtime.Module(engine, build_wat(TRIVIAL_WAT))
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    pre = linker.instantiate_pre(module)

    def once() -> None:
        store = wasmtime.Store(engine)
        wasi = wasmtime.WasiConfig()
        store.set_wasi(wasi)
        store.set_epoch_deadline(1_000_000)
        inst = pre.instantiate(store)
        inst.exports(store)["_start"](store)

    return p50(timeit(once, n))


def extism_fresh(n: int) -> float | None:
    try:
        import extism
    except ImportError:
        return None
    wasm = build_wat(EXTISM_WAT)

    def once() -> None:
        with extism.Plugin(wasm, wasi=False) as plugin:
            plugin.call("run", b"")

    return p50(timeit(once, n))


def throughput(k: Kernel, threads: int, seconds: float) -> float:
    done = [0] * threads
    end = time.monotonic() + seconds

    def loop(i: int) -> None:
        while time.monotonic() < end:
            invoke_ok(k, "cpu")
            done[i] += 1

    ts = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(done) / (time.monotonic() - t0)


def overshoot(k: Kernel, name: str, n: int) -> float:
    samples = []
    for _ in range(n):
        all_ready(k)
        t = time.perf_counter()
        r = k.invoke(name, {})
        samples.append(time.perf_counter() - t - 0.100)
        assert r.error is not None and r.error.code == "TIMEOUT", r.error
    return p50(samples)


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _switches(pid: int) -> int:
    n = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/status") as f:
            for line in f:
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    n += int(line.split()[1])
    return n


def idle_cost(k: Kernel, seconds: float) -> tuple[float, float]:
    """CPU ms/s and context switches/s of the idle workers (no call running)."""
    pool = k.workers
    if pool is None:
        return 0.0, 0.0
    all_ready(k)  # a replacement still starting is not idle
    time.sleep(0.5)
    pids = pool.pids()
    c0, w0 = sum(_cpu_s(p) for p in pids), sum(_switches(p) for p in pids)
    time.sleep(seconds)
    c1, w1 = sum(_cpu_s(p) for p in pids), sum(_switches(p) for p in pids)
    n = max(len(pids), 1)
    return (c1 - c0) * 1000 / seconds / n, (w1 - w0) / seconds / n


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    n = 60 if QUICK else 300
    secs = 1.5 if QUICK else 4.0
    up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"nproc {os.cpu_count()}   {up}")
    print(f"python {sys.version.split()[0]}   wasmtime {version('wasmtime')}   n={n}\n")
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        pack = make_pack(tmp / "pack")
        modes = {"thread": 'isolation = "thread"', "process": "count = 4"}
        lat: dict[str, dict[str, tuple[float, float]]] = {}
        thr: dict[str, dict[int, float]] = {}
        over: dict[str, dict[str, float]] = {}
        workers: dict[str, Any] = {}
        idle = (0.0, 0.0)
        for mode, cfg in modes.items():
            with kernel(pack, tmp, cfg) as k:
                lat[mode] = section_latency(k, n)
                if k.workers is not None:  # workers that ran calls (later sections kill some)
                    idle = idle_cost(k, 2.0 if QUICK else 5.0)
                if mode == "thread":
                    thr[mode] = {c: throughput(k, c, secs) for c in (1, 2, 4)}
                over[mode] = {}
                for name in ("spin", "sleepy"):
                    over[mode][f"{name} idle"] = overshoot(k, name, 5 if QUICK else 10)
                    with busy_thread():
                        over[mode][f"{name} busy"] = overshoot(k, name, 5 if QUICK else 10)
                if k.workers is not None:
                    pool = k.workers
                    workers = {
                        "start_ms": list(pool.stats.start_ms),
                        "rss": [rss_mib(p) for p in pool.pids()],
                        "started": pool.stats.started,
                    }
        # Process mode as the issue counts it: N workers ([workers] count = N), N callers.
        thr["process"] = {}
        for c in (1, 2, 4):
            with kernel(pack, tmp, f"count = {c}") as k:
                throughput(k, c, 0.5)  # every worker started and warm before the figure
                all_ready(k)
                thr["process"][c] = throughput(k, c, secs)
        bare = bare_wasmtime(n)
        ext = extism_fresh(n)

    print("Per call, kernel.invoke, fresh instance every call (ms):")
    print(f"  {'':26}{'thread p50':>12}{'p95':>9}{'process p50':>13}{'p95':>9}{'ratio':>8}")
    for name in lat["thread"]:
        t, p = lat["thread"][name], lat["process"][name]
        print(f"  {name:26}{t[0]:12.3f}{t[1]:9.3f}{p[0]:13.3f}{p[1]:9.3f}{p[0] / t[0]:8.2f}x")
    for name in ("hello", "hello (spaced)"):
        p50_ms = lat["process"][name][0]
        print(f"  target: Python {name} p50 under 1.5 ms in process mode: {verdict(p50_ms < 1.5)}")
    for name, (kern, work) in CPU_PER_CALL.items():
        print(
            f"  CPU per {name} call, process mode, back to back: kernel process {kern:.3f} ms, "
            f"workers {work:.3f} ms (the call, the prewarm and the drop)"
        )
    print(f"  {'bare wasmtime-py trivial':26}{bare:12.3f}")
    if ext is None:
        print("  Extism fresh plugin + call: extism not installed (dev.py setup installs it)")
    else:
        print(f"  {'Extism fresh plugin+call':26}{ext:12.3f}")
        print(
            f"  trivial vs Extism: thread {lat['thread']['trivial'][0] / ext:.2f}x, "
            f"process {lat['process']['trivial'][0] / ext:.2f}x"
        )
        fast = lat["process"]["trivial"][0] < ext
        print(f"  target: trivial WASM, process mode, faster than Extism's fresh: {verdict(fast)}")
    print(
        "\nCPU-bound Python skill, calls/s (speed-up over 1): thread mode with N caller "
        "threads; process mode with N workers and N callers:"
    )
    for mode in modes:
        base = thr[mode][1]
        row = "  ".join(f"{c}: {v:6.1f} ({v / base:.2f}x)" for c, v in thr[mode].items())
        print(f"  {mode:8} {row}")
    two = thr["process"][2] / thr["process"][1]
    print(f"  target: at least 1.9x at 2 workers on 2 cores (process): {verdict(two >= 1.9)}")
    print("\nTimeout overshoot past a 100 ms limit, median ms (a ready worker each time):")
    for key in over["thread"]:
        print(f"  {key:14} thread {over['thread'][key]:9.1f}   process {over['process'][key]:9.1f}")
    if workers:
        st = workers["start_ms"]
        print(
            f"\nWorkers: {workers['started']} started; start (spawn -> ready) median "
            f"{statistics.median(st):.0f} ms, max {max(st):.0f} ms; RSS per worker "
            + ", ".join(f"{r:.0f}" for r in workers["rss"])
            + " MiB"
        )
        print(
            f"Idle worker (no call running): {idle[0]:.2f} CPU ms/s, {idle[1]:.1f} wake-ups/s "
            "(the epoch ticker sleeps while no guest runs)"
        )
    up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"\nat the end: {up}")


if __name__ == "__main__":
    main()
