"""structlog set-up: configured once, to stderr, JSON for machines or console for people.

``InvocationLog`` is the logger host code uses for one invocation: every line a skill causes
(its own ``log()`` calls, denied HTTP requests, host-function errors) is redacted by the
invocation's sanitizer (granted secrets in all their spellings, credential shapes, host paths)
and rate-limited per kind (the event name): after ``limit`` lines of a kind, later ones are only
counted, and ``finish()`` writes one ``log_lines_suppressed`` line per kind that overflowed.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import structlog

if TYPE_CHECKING:
    from .sanitize import Sanitizer

__all__ = [
    "HOST_LINES_PER_KIND",
    "SKILL_LOG_LINES",
    "CallLoggers",
    "InvocationLog",
    "configure_logging",
    "ensure_logging",
]

HOST_LINES_PER_KIND: Final[int] = 20
"""Host log lines of one kind (event name) one invocation may cause; later ones are counted."""
SKILL_LOG_LINES: Final[int] = 1000
"""Lines of the skill's own ``log()`` kept per invocation (``skill.log``)."""
LOG_FIELD_CHARS: Final[int] = 4096
"""Characters kept of one string field of a line a skill caused."""

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class _StderrLogger:
    """Writes each line to ``sys.stderr`` as it is *now*, never raising.

    structlog's ``PrintLogger`` keeps the stream it was configured with; once that stream is
    closed (a redirected stderr, a test's capture), every later log call raised, and a log
    call in an error path turned a handled failure into a crash. A line that cannot be
    written is lost; the call that logged it goes on.
    """

    _lock = threading.Lock()

    def msg(self, message: str) -> None:
        try:
            stream = sys.stderr
            if stream is None:
                return
            with self._lock:
                stream.write(message + "\n")
                stream.flush()
        except Exception:
            return

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def _stderr_logger(*_args: Any) -> _StderrLogger:
    return _StderrLogger()


def configure_logging(*, level: str = "warning", json: bool = False) -> None:
    """Send structured logs to stderr at ``level``; JSON lines if ``json`` else console."""
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.WARNING)),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )


def ensure_logging() -> None:
    """Apply a quiet default (warnings to stderr) unless the embedder configured structlog."""
    if not structlog.is_configured():
        configure_logging()


class CallLoggers:
    """Loggers bound per call from a per-skill base (``skill``, ``pack`` bound once).

    ``logger.bind`` on structlog's lazy proxy assembles a new logger from the configuration
    every time; binding onto a cached base is several times cheaper. The bases are rebuilt
    whenever structlog's configuration changes, so a reconfiguration still takes effect.
    """

    def __init__(self, logger: Any) -> None:
        self._logger = logger
        self._config: tuple[Any, ...] = ()
        self._bases: dict[tuple[str, str], Any] = {}

    def bind(self, skill: str, pack: str, **fields: Any) -> Any:
        """``logger.bind(skill=skill, pack=pack, **fields)``."""
        config = tuple(structlog.get_config().values())
        if config != self._config:
            self._bases, self._config = {}, config
        bases = self._bases
        base = bases.get((skill, pack))
        if base is None:
            base = bases[(skill, pack)] = self._logger.bind(skill=skill, pack=pack)
        return base.bind(**fields)


_METHODS: Final[dict[str, int]] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class InvocationLog:
    """One invocation's logger: redacts what it writes and caps each kind of line.

    ``limits`` overrides the cap for some kinds (``skill.log`` keeps ``SKILL_LOG_LINES``).
    Lines below the configured level are neither written nor counted. Thread-safe (a skill's
    host calls may come from several threads of the executor).
    """

    rate_limited: Final = True
    """Marks a logger that caps lines itself (host functions then skip their own cap)."""

    def __init__(
        self,
        logger: Any,
        redactor: Sanitizer | None = None,
        *,
        per_kind: int = HOST_LINES_PER_KIND,
        limits: Mapping[str, int] | None = None,
    ) -> None:
        self._logger = logger
        self._redactor = redactor
        self._per_kind = per_kind
        self._limits = {"skill.log": SKILL_LOG_LINES, **(limits or {})}
        self._counts: dict[str, int] = {}
        self._dropped: dict[str, int] = {}
        self._lock = threading.Lock()
        self._finished = False

    def debug(self, event: str, **fields: Any) -> None:
        self._emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit("error", event, fields)

    def bind(self, **fields: Any) -> InvocationLog:
        """A view with more bound fields that shares this invocation's counts."""
        child = InvocationLog.__new__(InvocationLog)
        child.__dict__.update(self.__dict__)
        child._logger = self._logger.bind(**self._clean_fields(fields))
        return child

    @property
    def suppressed(self) -> dict[str, int]:
        """Lines counted but not written, per kind."""
        with self._lock:
            return dict(self._dropped)

    def finish(self) -> None:
        """Write one summary line per kind that went over its cap; idempotent."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
            dropped = sorted(self._dropped.items())
        for kind, n in dropped:
            self._logger.warning(
                "log_lines_suppressed",
                kind=kind,
                suppressed=n,
                limit=self._limits.get(kind, self._per_kind),
            )

    def is_enabled_for(self, level: int) -> bool:
        """Whether the wrapped logger writes lines of ``level`` (unknown: yes)."""
        check = getattr(self._logger, "is_enabled_for", None)
        if check is None:
            return True
        try:
            return bool(check(level))
        except Exception:
            return True

    def _enabled(self, method: str) -> bool:
        return self.is_enabled_for(_METHODS[method])

    def _emit(self, method: str, event: str, fields: dict[str, Any]) -> None:
        if not self._enabled(method):
            return
        kind = str(event)[:80]
        with self._lock:
            n = self._counts.get(kind, 0) + 1
            self._counts[kind] = n
            if n > self._limits.get(kind, self._per_kind):
                self._dropped[kind] = self._dropped.get(kind, 0) + 1
                return
        getattr(self._logger, method)(kind, **self._clean_fields(fields))

    def _clean_fields(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in fields.items():
            if value is None or isinstance(value, (bool, int, float)):
                out[key] = value
                continue
            text = value if isinstance(value, str) else repr(value)
            if self._redactor is not None:
                text = self._redactor.clean_text(text).text  # whole: a cut could split one
            out[key] = text[:LOG_FIELD_CHARS]
        return out
