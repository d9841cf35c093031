"""Execution workers against today's thread mode, in one run (``.venv/bin/python
bench/bench_workers.py [--quick]``). Prints figures and ratios; asserts nothing.

Process mode is the default configuration (``[workers]`` as shipped: ``count`` = CPU count);
one extra row measures hello with ``count = 4``. Sections: Python hello per call
(``kernel.invoke``, fresh instance every call) with its CPU per call split by process, worker
thread and phase (a worker-shaped loop in a subprocess times the phases); a trivial WASM
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
from bastion.sandbox.workers.wire import IDLE_PHASES  # noqa: E402
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


CPU_PER_CALL: dict[str, dict[str, float]] = {}
"""Skill -> CPU ms per call, back to back, process mode: ``kernel`` (this process) and each
worker thread role (``main``, ``bastion-dropper``, ``bastion-ticker``, wasmtime's own)."""
IN_WORKER: dict[str, dict[str, float]] = {}
"""Skill -> CPU ms per call of each phase of the workers' call loop, as the workers measured
them (``PoolStats.phase_cpu_ns``, from their *idle* frames), back to back."""


def _phases_now(k: Kernel) -> tuple[list[int], int]:
    stats = k.workers.stats  # type: ignore[union-attr]
    return list(stats.phase_cpu_ns), stats.phase_calls


def _thread_cpu_ns(pid: int) -> dict[str, int]:
    """CPU nanoseconds per thread role of ``pid`` (``schedstat``: exact, not clock ticks); the
    thread whose id is the pid is ``main`` (a worker's call loop)."""
    out: dict[str, int] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
        except OSError:
            continue
        role = "main" if int(tid) == pid else comm
        out[role] = out.get(role, 0) + ns
    return out


def _roles(pids: list[int]) -> dict[str, int]:
    out: dict[str, int] = {"kernel": sum(_thread_cpu_ns(os.getpid()).values())}
    for pid in pids:
        for role, ns in _thread_cpu_ns(pid).items():
            out[role] = out.get(role, 0) + ns
    return out


def section_latency(k: Kernel, n: int) -> dict[str, tuple[float, float]]:
    """Back to back, and spaced by 5 ms (a worker prewarms the next instance after it
    answers; back to back, the next call may wait for that)."""
    out = {}
    for _ in range(3):  # calls in a row grow the pool to its size: measure it grown
        for _ in range(20):
            invoke_ok(k, "hello")
        all_ready(k)
    for name in ("hello", "trivial"):
        pids = k.workers.pids() if k.workers is not None else []
        c0 = _roles(pids) if pids else {}
        p0 = _phases_now(k) if pids else ([], 0)
        t0 = time.perf_counter()
        samples = timeit(lambda name=name: invoke_ok(k, name), n)  # type: ignore[misc]
        wall = time.perf_counter() - t0
        if pids and pids == k.workers.pids():  # type: ignore[union-attr]
            c1 = _roles(pids)
            CPU_PER_CALL[name] = {r: (c1[r] - c0.get(r, 0)) / 1e6 / n for r in c1}
            CPU_PER_CALL[name]["wall"] = wall * 1000 / n
            p1, calls = _phases_now(k)
            if calls > p0[1]:
                IN_WORKER[name] = {
                    ph: (b - a) / 1e6 / (calls - p0[1])
                    for ph, a, b in zip(IDLE_PHASES, p0[0], p1, strict=True)
                }
        out[name] = (p50(samples), pct(samples, 0.95))
        spaced = []
        for _ in range(n):
            time.sleep(0.005)
            t = time.perf_counter()
            invoke_ok(k, name)
            spaced.append(time.perf_counter() - t)
        out[name + " (spaced)"] = (p50(spaced), pct(spaced, 0.95))
    return out


PHASES = ("execute", "drop", "prewarm")


def phase_loop(n: int) -> dict[str, list[float]]:
    """In this process (a subprocess of the bench): the worker's loop for Python hello without
    the socket, timed per phase in thread CPU ms and minor page faults. The engine is made as
    a worker makes it (pooling allocator, keep-resident memory); each call takes the instance
    the previous prewarm made, then its store is dropped, then the next one is prewarmed."""
    import resource

    from bastion.executor import Capabilities, ExecutionRequest, Limits
    from bastion.sandbox import engine
    from bastion.sandbox.python_exec import PythonExecutor

    engine.configure_engine(pooling=True)
    engine.get_engine()
    folder = Path(tempfile.mkdtemp(prefix="bench-phase-"))
    entry = folder / "skill.py"
    entry.write_text(SKILLS["hello"][1])
    ex = PythonExecutor()
    ex.load()

    def request() -> ExecutionRequest:
        return ExecutionRequest(
            skill="hello", version="1.0.0", runtime="python", entry=entry, folder=folder,
            input=None, input_json="{}", caps=Capabilities(), limits=Limits(),
            deadline=time.monotonic() + 10, invocation_id="bench",
            logger=structlog.get_logger("bench"), audit=lambda *_a: None,
        )  # fmt: skip

    def faults() -> int:
        return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt

    out: dict[str, list[float]] = {p: [] for p in PHASES}
    out.update({f"{p} faults": [] for p in PHASES})
    warmup = 30
    ex.prewarm(request())
    for i in range(n + warmup):
        req, after = request(), []
        for phase in PHASES:
            c, f = time.thread_time_ns(), faults()
            if phase == "execute":
                ex.execute(req, after=after)
            elif phase == "drop":
                for drop in after:
                    drop()
            else:
                ex.prewarm(req)
            if i >= warmup:
                out[phase].append((time.thread_time_ns() - c) / 1e6)
                out[f"{phase} faults"].append(faults() - f)
    return out


def phase_split(n: int) -> dict[str, float]:
    """``phase_loop`` in a fresh interpreter (its engine is a worker's, not this process's):
    the mean of each phase."""
    import json

    res = subprocess.run(
        [sys.executable, __file__, "--phases", str(n)], capture_output=True, text=True, check=True
    )
    data = json.loads(res.stdout.strip().splitlines()[-1])
    return {k: statistics.fmean(v) for k, v in data.items()}


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


def print_cpu(phases: dict[str, float], hello_p50: float, size: int) -> None:
    """CPU per call by process, worker thread and phase, and the floor it sets on the p50."""
    for name, roles in CPU_PER_CALL.items():
        work = sum(v for r, v in roles.items() if r not in ("kernel", "wall"))
        print(
            f"  CPU per {name} call, back to back: kernel process {roles['kernel']:.3f} ms, "
            f"workers {work:.3f} ms"
        )
    roles = CPU_PER_CALL.get("hello")
    if not roles:
        return
    main_ms = roles.get("main", 0.0)
    measured = IN_WORKER.get("hello", {})
    print(
        "  CPU per hello call, back to back, where (ms): as the workers measured each phase of "
        "their call loop, and alone (a worker-shaped loop in a process of its own)"
    )
    print(f"    {'worker main thread':28}{'in the pool':>12}{'alone':>8}")
    for phase, what in (
        ("rebuild", "the request and its call logger, from the call frame"),
        ("execute", "the call (guest call-skill -> output)"),
        ("answer", "the answer encoded and sent"),
        ("drop", "the used store's drop (the slot reset; with pre-faulting, + its written pages)"),
        ("prewarm", "the next instance (instantiate + warm)"),
    ):
        alone = f"{phases[phase]:8.3f}" if phase in PHASES else f"{'':8}"
        print(f"    {phase:28}{measured.get(phase, 0.0):12.3f}{alone}   {what}")
    rest = main_ms - sum(measured.values())
    print(
        f"    {'the rest':28}{rest:12.3f}{'':8}   waiting for and reading the next frame "
        "(the wake-up), sending idle"
    )
    if measured:
        slower = sum(measured[p] - phases[p] for p in PHASES)
        print(
            f"    (execute + drop + prewarm take {slower:+.3f} ms in the pool than alone: the "
            "other worker, the kernel and other processes share the CPUs and their caches)"
        )
    if roles.get("bastion-dropper", 0.0) >= 0.0005:  # a pool of one drops on its own thread
        print("    (the drop ran on the bastion-dropper thread below, not on the main thread)")
    print(f"    {'measured (schedstat)':28}{main_ms:12.3f}")
    for role, v in sorted(roles.items()):
        if role not in ("main", "kernel", "wall") and v >= 0.0005:
            print(f"    worker thread {role:18} {v:6.3f}")
    total = sum(v for r, v in roles.items() if r != "wall")
    print(f"    kernel process               {roles['kernel']:6.3f}   invoke, dispatch, bench loop")
    print(
        f"    total {total:.3f} ms CPU per call on {size} CPUs: back to back the mean time per "
        f"call cannot be below {total / size:.3f} ms (measured mean {roles['wall']:.3f}, "
        f"p50 {hello_p50:.3f}); a p50 under 1.5 ms needs about {1.5 * size:.1f} ms CPU per call "
        "or less"
    )


def main() -> None:
    n = 60 if QUICK else 300
    secs = 1.5 if QUICK else 4.0
    up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"nproc {os.cpu_count()}   {up}")
    print(f"python {sys.version.split()[0]}   wasmtime {version('wasmtime')}   n={n}\n")
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        pack = make_pack(tmp / "pack")
        # Process mode as shipped: no [workers] settings, so count = CPU count.
        modes = {"thread": 'isolation = "thread"', "process": ""}
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
        with kernel(pack, tmp, "count = 4") as k:
            lat4 = section_latency(k, n)
        phases = phase_split(n * 3)
        # Process mode as the issue counts it: N workers ([workers] count = N), N callers.
        thr["process"] = {}
        for c in (1, 2, 4):
            with kernel(pack, tmp, f"count = {c}") as k:
                throughput(k, c, 0.5)  # every worker started and warm before the figure
                all_ready(k)
                thr["process"][c] = throughput(k, c, secs)
        bare = bare_wasmtime(n)
        ext = extism_fresh(n)

    size = os.cpu_count() or 1
    print(
        "Per call, kernel.invoke, fresh instance every call (ms); process mode is the default "
        f"configuration ([workers] count = CPU count = {size}):"
    )
    print(f"  {'':26}{'thread p50':>12}{'p95':>9}{'process p50':>13}{'p95':>9}{'ratio':>8}")
    for name in lat["thread"]:
        t, p = lat["thread"][name], lat["process"][name]
        print(f"  {name:26}{t[0]:12.3f}{t[1]:9.3f}{p[0]:13.3f}{p[1]:9.3f}{p[0] / t[0]:8.2f}x")
    for name in ("hello", "hello (spaced)"):
        p50_ms = lat["process"][name][0]
        print(f"  target: Python {name} p50 under 1.5 ms in process mode: {verdict(p50_ms < 1.5)}")
    for name in ("hello", "hello (spaced)"):
        h = lat4[name]
        print(f"  {name + ', count = 4':26}{'':21}{h[0]:13.3f}{h[1]:9.3f}")
    print_cpu(phases, lat["process"]["hello"][0], size)
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
    if "--phases" in sys.argv:
        import json

        print(json.dumps(phase_loop(int(sys.argv[sys.argv.index("--phases") + 1]))))
    else:
        main()
