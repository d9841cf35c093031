"""Per-call loggers: each call's own fields, and a structlog reconfiguration still applies."""

from __future__ import annotations

from typing import Any

import structlog
from structlog.testing import capture_logs

from bastion.logs import CallLoggers


def test_each_call_gets_its_own_fields_on_its_skills_base() -> None:
    loggers = CallLoggers(structlog.get_logger("test"))
    loggers.bind("a", "p", invocation_id="0")  # a base built under the configuration before
    with capture_logs() as cap:
        loggers.bind("a", "p", invocation_id="1", tenant="t").warning("one")
        loggers.bind("b", "q", invocation_id="2").warning("two")
        loggers.bind("a", "p", invocation_id="3").warning("three")
    seen = [(e["event"], e["skill"], e["pack"], e["invocation_id"], e.get("tenant")) for e in cap]
    assert seen == [
        ("one", "a", "p", "1", "t"),
        ("two", "b", "q", "2", None),
        ("three", "a", "p", "3", None),
    ]


def test_a_skill_with_the_same_name_in_another_pack_has_its_own_base() -> None:
    loggers = CallLoggers(structlog.get_logger("test"))
    with capture_logs() as cap:
        loggers.bind("a", "p1", invocation_id="1").warning("x")
        loggers.bind("a", "p2", invocation_id="2").warning("y")
    assert [(e["pack"], e["invocation_id"]) for e in cap] == [("p1", "1"), ("p2", "2")]


def test_a_new_structlog_configuration_takes_effect() -> None:
    loggers = CallLoggers(structlog.get_logger("test"))
    seen: list[tuple[str, str, str]] = []

    def processor(name: str) -> Any:
        def record(_logger: Any, _method: str, event: dict[str, Any]) -> Any:
            seen.append((name, event["event"], event["invocation_id"]))
            raise structlog.DropEvent

        return record

    saved = structlog.get_config()
    try:
        structlog.configure(processors=[processor("first")])
        loggers.bind("a", "p", invocation_id="1").warning("x")
        structlog.configure(processors=[processor("second")])
        loggers.bind("a", "p", invocation_id="2").warning("y")
    finally:
        structlog.configure(**saved)
    assert seen == [("first", "x", "1"), ("second", "y", "2")]
