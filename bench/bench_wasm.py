"""WASM sandbox benchmarks (run on demand: ``.venv/bin/python bench/bench_wasm.py``).

Prints figures and ratios; asserts nothing. Sections: invoke latency (executor vs bare
wasmtime-py vs subprocess vs in-process), cold compile vs cached load, timeout accuracy (idle
and with a CPU-bound Python thread), throughput with 1 and 2 worker threads.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path

import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import wasmtime  # noqa: E402
from wasmtime import _ffi as ffi  # noqa: E402

from bastion.errors import ExecutionError  # noqa: E402
from bastion.executor import Capabilities, ExecutionRequest, Limits  # noqa: E402
from bastion.sandbox.cache import CompileCache  # noqa: E402
from bastion.sandbox.engine import TICK_MS, get_engine  # noqa: E402
from bastion.sandbox.wasi_module import WasiModuleExecutor  # noqa: E402
from tests.sandbox.guestbuild import GUESTS, build_c, build_wat  # noqa: E402

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
INPUT = json.dumps({"city": "Lyon", "units": "metric", "days": [1, 2, 3]})


def stats(samples: list[float]) -> str:
    s = sorted(samples)
    med = statistics.median(s)
    p95 = s[min(len(s) - 1, int(len(s) * 0.95))]
    return f"median {med * 1e3:8.3f} ms   p95 {p95 * 1e3:8.3f} ms"


def timeit(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def request(entry: Path, inp: str = INPUT, timeout_ms: int = 5000) -> ExecutionRequest:
    return ExecutionRequest(
        skill="bench",
        version="1",
        runtime="wasm",
        entry=entry,
        folder=entry.parent,
        input=None,
        input_json=inp,
        caps=Capabilities(),
        limits=Limits(timeout_ms=timeout_ms),
        deadline=time.monotonic() + timeout_ms / 1000,
        invocation_id="b",
        logger=structlog.get_logger(),
        audit=lambda k, f: None,
    )


def bare_runner(wasm: bytes) -> Callable[[], bytes]:
    """The same echo with plain wasmtime-py: linker + InstancePre, fresh store, Func call."""
    engine = get_engine()
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    pre = linker.instantiate_pre(wasmtime.Module(engine, wasm))
    stdin = INPUT.encode()

    def run() -> bytes:
        out: list[bytes] = []
        cfg = wasmtime.WasiConfig()
        vec = ffi.wasm_byte_vec_t()
        buf = ctypes.create_string_buffer(stdin, len(stdin))
        ffi.wasm_byte_vec_new(
            ctypes.byref(vec), len(stdin), ctypes.cast(buf, ctypes.POINTER(ffi.wasm_byte_t))
        )
        ffi.wasi_config_set_stdin_bytes(cfg.ptr(), ctypes.byref(vec))
        cfg.stdout_custom = out.append
        store = wasmtime.Store(engine)
        store.set_wasi(cfg)
        store.set_epoch_deadline(1_000_000)
        inst = pre.instantiate(store)
        inst.exports(store)["_start"](store)  # type: ignore[operator]
        store.close()
        return b"".join(out)

    return run


def section_latency(ex: WasiModuleExecutor, echo: Path) -> None:
    print("\n## Invoke latency: trivial echo skill (warm cache)")
    req = lambda: request(echo)  # noqa: E731
    assert ex.execute(req()) == INPUT.encode()
    for _ in range(200):
        ex.execute(req())
    ours = timeit(lambda: ex.execute(req()), 3000)
    bare = bare_runner(echo.read_bytes())
    assert bare() == INPUT.encode()
    for _ in range(200):
        bare()
    bare_s = timeit(bare, 3000)
    code = "import sys; sys.stdout.write(sys.stdin.read())"
    sub = timeit(
        lambda: subprocess.run(
            [sys.executable, "-c", code], input=INPUT.encode(), capture_output=True, check=True
        ),
        30,
    )
    inproc = timeit(lambda: json.dumps(json.loads(INPUT)).encode(), 3000)
    print(f"executor.execute        {stats(ours)}")
    print(f"bare wasmtime-py        {stats(bare_s)}")
    print(f"subprocess python -c    {stats(sub)}")
    print(f"in-process Python call  {stats(inproc)}")
    r = statistics.median(ours) / statistics.median(bare_s)
    print(
        f"ratio executor / bare: {r:.2f}x;  subprocess / executor: "
        f"{statistics.median(sub) / statistics.median(ours):.0f}x"
    )


def wat_with_funcs(n: int) -> bytes:
    body = "\n".join(
        f"(func $f{i} (param i32) (result i32) (i32.add (i32.mul (local.get 0) (i32.const {i})) "
        f"(i32.xor (local.get 0) (i32.const {i * 7}))))"
        for i in range(n)
    )
    return build_wat(f'(module (memory (export "memory") 1) {body} (func (export "_start")))')


def section_compile(echo_wasm: bytes) -> None:
    print("\n## Cold compile vs cached load (verified sha256 + deserialize_file)")
    for name, wasm in [
        ("echo.c", echo_wasm),
        ("2k funcs", wat_with_funcs(2000)),
        ("20k funcs", wat_with_funcs(20000)),
    ]:
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            CompileCache(Path(d)).module(wasm)
            cold = time.perf_counter() - t
            loads = []
            for _ in range(5):
                c = CompileCache(Path(d))
                t = time.perf_counter()
                c.module(wasm)
                loads.append(time.perf_counter() - t)
            memo = timeit(lambda c=c, w=wasm: c.module(w), 100)  # type: ignore[misc]
        load = statistics.median(loads)
        print(
            f"{name:10s} {len(wasm) / 1024:8.1f} KiB   cold compile {cold * 1e3:8.1f} ms   "
            f"cached load {load * 1e3:7.2f} ms   memo hit {statistics.median(memo) * 1e6:6.1f} us"
            f"   ({cold / load:.0f}x)"
        )


def section_timeouts(ex: WasiModuleExecutor, loop: Path) -> None:
    print(f"\n## Timeout accuracy (tick {TICK_MS} ms; overshoot = actual stop - requested)")
    stop = threading.Event()

    def burn() -> None:
        x = 0
        while not stop.is_set():
            x += 1

    for label in ("idle", "CPU-bound Python thread"):
        burner = None
        if label != "idle":
            burner = threading.Thread(target=burn, daemon=True)
            burner.start()
        for t_ms in (100, 1000):
            over = []
            for _ in range(5 if t_ms == 1000 else 10):
                req = request(loop, "{}", timeout_ms=t_ms)
                start = req.deadline - t_ms / 1000
                with contextlib.suppress(ExecutionError):
                    ex.execute(req)
                over.append((time.monotonic() - start) * 1000 - t_ms)
            print(
                f"{label:24s} T={t_ms:5d} ms   overshoot min {min(over):6.1f}  "
                f"median {statistics.median(over):6.1f}  max {max(over):6.1f} ms"
            )
        if burner is not None:
            stop.set()
            burner.join()


def section_throughput(ex: WasiModuleExecutor, spin: Path) -> None:
    print("\n## Throughput: CPU-bound skill (spin.c)")
    single = timeit(lambda: ex.execute(request(spin, "20")), 3)
    print(f"one call: {statistics.median(single) * 1e3:.1f} ms")
    n = 16
    base = 0.0
    for workers in (1, 2):
        with ThreadPoolExecutor(workers) as pool:
            t = time.perf_counter()
            list(pool.map(lambda _: ex.execute(request(spin, "20")), range(n)))
            dt = time.perf_counter() - t
        rate = n / dt
        base = base or rate
        print(f"{workers} worker(s): {rate:6.1f} calls/s   ({rate / base:.2f}x)")


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bastion-bench-"))
    echo_wasm = build_c(GUESTS / "echo.c")
    paths = {}
    for name, data in [
        ("echo", echo_wasm),
        ("spin", build_c(GUESTS / "spin.c")),
        ("loop", build_wat(GUESTS / "loop.wat")),
    ]:
        paths[name] = tmp / f"{name}.wasm"
        paths[name].write_bytes(data)
    py = sys.version.split()[0]
    print(f"wasmtime {version('wasmtime')} / Python {py} / {os.cpu_count()} CPUs")
    with WasiModuleExecutor(CompileCache(tmp / "cache")) as ex:
        section_latency(ex, paths["echo"])
        section_compile(echo_wasm)
        section_timeouts(ex, paths["loop"])
        section_throughput(ex, paths["spin"])


if __name__ == "__main__":
    main()
