"""The worker pool's counters in the Prometheus text format (appended to the kernel's).

``bastion_worker_events_total{event=...}``: workers started, killed at a deadline, killed on
cancellation, and crashed (died by themselves or broke the framing); ``bastion_worker_calls``.
"""

from __future__ import annotations

from .pool import PoolStats

__all__ = ["worker_metrics_text"]


def worker_metrics_text(stats: PoolStats) -> str:
    """Counter families for ``stats`` (names distinct from the kernel's own)."""
    events = {
        "started": stats.started,
        "killed_timeout": stats.timeouts_killed,
        "killed_cancel": stats.cancelled_killed,
        "crashed": stats.crashed,
    }
    lines = [
        "# HELP bastion_worker_events_total Worker processes started, killed and crashed",
        "# TYPE bastion_worker_events_total counter",
        *(f'bastion_worker_events_total{{event="{k}"}} {v}.0' for k, v in events.items()),
        "# HELP bastion_worker_calls_total Calls sent to worker processes",
        "# TYPE bastion_worker_calls_total counter",
        f"bastion_worker_calls_total {stats.calls}.0",
    ]
    return "\n".join(lines) + "\n"
