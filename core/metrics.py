"""In-process metrics: calls per skill by outcome code, latency histograms, cache hits.

Recording is a dict lookup and a few integer additions under one lock (no allocation after a
skill's first call). ``prometheus_text`` renders a snapshot in the Prometheus text exposition
format through ``prometheus-client`` (the ``metrics`` extra), with a private
``CollectorRegistry`` per call, so several kernels in one process never collide.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast, final

from .errors import ConfigError

__all__ = ["LATENCY_BUCKETS_S", "Metrics", "SkillStats", "prometheus_text"]

LATENCY_BUCKETS_S: Final[tuple[float, ...]] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
"""Upper bounds (seconds) of the latency histogram; a last ``+Inf`` bucket is implied."""


@dataclass(slots=True)
class SkillStats:
    """One skill's counters (copied out by ``Metrics.snapshot``)."""

    outcomes: dict[str, int] = field(default_factory=dict)
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    """Non-cumulative counts per bucket; the last is above the largest bound."""
    latency_sum_s: float = 0.0
    cache_hits: int = 0

    @property
    def calls(self) -> int:
        return sum(self.outcomes.values())


@final
class Metrics:
    """Per-skill counters; thread-safe, one short critical section per call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._skills: dict[str, SkillStats] = {}

    def record(self, skill: str, outcome: str, seconds: float, *, cache_hit: bool = False) -> None:
        """Count one call of ``skill`` ending with ``outcome`` (``ok`` or an error code)."""
        i = bisect.bisect_left(LATENCY_BUCKETS_S, seconds)
        with self._lock:
            st = self._skills.get(skill)
            if st is None:
                st = self._skills[skill] = SkillStats()
            st.outcomes[outcome] = st.outcomes.get(outcome, 0) + 1
            st.buckets[i] += 1
            st.latency_sum_s += seconds
            if cache_hit:
                st.cache_hits += 1

    def snapshot(self) -> dict[str, SkillStats]:
        """A consistent copy of every skill's counters."""
        with self._lock:
            return {
                name: SkillStats(dict(s.outcomes), list(s.buckets), s.latency_sum_s, s.cache_hits)
                for name, s in self._skills.items()
            }


def prometheus_text(
    stats: Mapping[str, SkillStats], breakers: Mapping[str, str] | None = None
) -> str:
    """The Prometheus text exposition of ``stats`` (and breaker states, 0 closed, 1 half-open,
    2 open). Raises ``ConfigError`` when ``prometheus-client`` is not installed."""
    try:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )
    except ImportError:
        raise ConfigError(
            "kernel.metrics_text() needs the 'prometheus-client' package, which is not installed",
            fix="pip install 'bastion[metrics]' (or read kernel.metrics.snapshot() instead)",
        ) from None
    states = {"closed": 0.0, "half_open": 1.0, "open": 2.0}

    class _Collector:
        def collect(self) -> Iterator[Any]:
            calls = CounterMetricFamily(
                "bastion_skill_calls",
                "Invocations by skill and outcome code",
                labels=["skill", "outcome"],
            )
            hits = CounterMetricFamily(
                "bastion_skill_cache_hits",
                "Invocations answered from the result cache",
                labels=["skill"],
            )
            latency = HistogramMetricFamily(
                "bastion_skill_duration_seconds", "Invocation latency", labels=["skill"]
            )
            for name in sorted(stats):
                s = stats[name]
                for outcome in sorted(s.outcomes):
                    calls.add_metric([name, outcome], s.outcomes[outcome])
                hits.add_metric([name], s.cache_hits)
                cum = 0
                buckets: list[tuple[str, float]] = []
                for bound, n in zip((*LATENCY_BUCKETS_S, float("inf")), s.buckets, strict=True):
                    cum += n
                    buckets.append(("+Inf" if bound == float("inf") else repr(bound), cum))
                latency.add_metric([name], buckets, s.latency_sum_s)
            yield calls
            yield hits
            yield latency
            if breakers:
                gauge = GaugeMetricFamily(
                    "bastion_skill_breaker_state",
                    "Circuit breaker state (0 closed, 1 half-open, 2 open)",
                    labels=["skill"],
                )
                for name in sorted(breakers):
                    gauge.add_metric([name], states.get(breakers[name], 0.0))
                yield gauge

    registry = CollectorRegistry(auto_describe=False)
    registry.register(cast(Any, _Collector()))
    return str(generate_latest(registry).decode("utf-8"))
