"""structlog set-up: configured once, to stderr, JSON for machines or console for people."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

__all__ = ["CallLoggers", "configure_logging", "ensure_logging"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class _Stderr:
    """Whatever ``sys.stderr`` is when a line is written, not when logging was configured: a
    stream swapped and closed later (a test's capture, a daemon's redirect) never breaks it."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_STDERR = _Stderr()


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
        logger_factory=structlog.PrintLoggerFactory(file=_STDERR),  # type: ignore[arg-type]
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
