"""The kernel pipeline's added cost per invocation over the bare native executor.

Run on demand: ``.venv/bin/python bench/bench_pipeline.py``. Compares ``NativeExecutor.execute``
alone with ``kernel.invoke`` when the policy configures nothing, and when it configures
guardrails (a policy rule and the three presets), rate limits (never reached), tenant rules,
the breaker and the result cache (misses: new arguments every call; hits: the same call).
Prints figures; asserts nothing.
"""

from __future__ import annotations

import itertools
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402

from bastion import InvocationContext, Kernel, hookimpl, load_policy, native_skill  # noqa: E402
from bastion.audit import NullAudit  # noqa: E402
from bastion.executor import Capabilities, ExecutionRequest, Limits  # noqa: E402
from bastion.native import NativeExecutor  # noqa: E402


@native_skill(
    name="add",
    version="1.0.0",
    description="Add two numbers.",
    input_schema={
        "type": "object",
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"],
    },
    deterministic=True,
)
def add(a: float, b: float) -> dict[str, float]:
    return {"sum": a + b}


class Plugin:
    @hookimpl
    def bastion_skills(self) -> list[Any]:
        return [add]


CONFIGURED = """
presets = ["production-safety", "cost-limits", "lethal-trifecta"]
[[guardrails]]
action = "block"
reason = "no huge numbers"
skills = ["add"]
args = { a = "re:^9{12}" }
[rate_limits]
default = { rate = 1000000, burst = 1000000 }
tenant_default = { rate = 1000000, burst = 1000000 }
[breaker]
[cache]
ttl_s = 300
max_entries = 10000
[tenants."*"]
skills = ["add"]
invocations_per_day = 1000000000
max_concurrent = 64
"""

N = 5000


def timeit(fn: Any, n: int = N) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e6)
    return out


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def main() -> None:
    os.environ["BASTION_LOAD_PLUGINS"] = ""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    ex = NativeExecutor()

    def bare() -> None:
        req = ExecutionRequest(
            skill="add", version="1.0.0", runtime="native", entry=Path(), folder=Path(),
            input={"a": 1, "b": 2}, input_json='{"a":1,"b":2}', caps=Capabilities(),
            limits=Limits(10_000, 128, 256), deadline=time.monotonic() + 10,
            invocation_id="x", logger=structlog.get_logger(), audit=lambda e, f: None,
            native=add.func,
        )  # fmt: skip
        ex.execute(req)

    for _ in range(300):
        bare()
    rows = [("bare NativeExecutor.execute", timeit(bare))]
    ctx = InvocationContext(tenant="acme")
    for label, text in (("nothing configured", ""), ("all configured", CONFIGURED)):
        pol = load_policy(text=text)
        with Kernel(pol, plugins=[Plugin()], entry_points=False, audit=NullAudit()) as k:
            counter = itertools.count()
            for _ in range(300):
                k.invoke("add", {"a": next(counter), "b": 2}, context=ctx)
            rows.append(
                (
                    f"kernel.invoke, {label}" + (", cache miss" if text else ""),
                    timeit(
                        lambda c=counter: k.invoke("add", {"a": next(c), "b": 2}, context=ctx)  # type: ignore[misc]
                    ),
                )
            )
            if text:
                rows.append(
                    (
                        "kernel.invoke, all configured, cache hit",
                        timeit(lambda: k.invoke("add", {"a": 1, "b": 2}, context=ctx)),
                    )
                )
    ex.close()
    base = statistics.median(rows[0][1])
    print(f"kernel pipeline, trivial native skill, {N} calls each (no audit I/O)")
    for label, xs in rows:
        med = statistics.median(xs)
        print(
            f"  {label:44s} median {med:7.1f} us  p95 {pct(xs, 0.95):7.1f} us"
            f"  added {med - base:6.1f} us"
        )


if __name__ == "__main__":
    main()
