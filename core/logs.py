"""structlog set-up: configured once, to stderr, JSON for machines or console for people;
and ``get_logger``, the loggers Bastion's modules hold, which import structlog only when a line
is written.

structlog's import costs ~30 ms (its ``__init__`` imports ``structlog.stdlib`` and with it
asyncio); a one-shot ``bastion run`` and a worker process usually write no line at all, so
they should not pay it. ``get_logger(name)`` returns a ``LazyLogger``: ``bind`` only records
fields, a line below the configured level is dropped without structlog, and any other line
imports structlog and goes through ``structlog.get_logger(name).bind(...)`` under the
configuration of the moment, with the same fields and processors as before.
``configure_logging`` called before structlog is imported records the configuration and
applies it the moment *anyone* imports structlog (an import hook on ``sys.meta_path``), so
code using structlog directly never sees the unconfigured default (which prints to stdout).

``InvocationLog`` is the logger host code uses for one invocation: every line a skill causes
(its own ``log()`` calls, denied HTTP requests, host-function errors) is redacted by the
invocation's sanitizer (granted secrets in all their spellings, credential shapes, host paths)
and rate-limited per kind (the event name): after ``limit`` lines of a kind, later ones are only
counted, and ``finish()`` writes one ``log_lines_suppressed`` line per kind that overflowed.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec
    from types import ModuleType

    from .sanitize import Sanitizer

__all__ = [
    "HOST_LINES_PER_KIND",
    "SKILL_LOG_LINES",
    "CallLoggers",
    "InvocationLog",
    "LazyLogger",
    "configure_logging",
    "discard_unconfigured",
    "ensure_logging",
    "get_logger",
]

HOST_LINES_PER_KIND: Final[int] = 20
"""Host log lines of one kind (event name) one invocation may cause; later ones are counted."""
SKILL_LOG_LINES: Final[int] = 1000
"""Lines of the skill's own ``log()`` kept per invocation (``skill.log``)."""
LOG_FIELD_CHARS: Final[int] = 4096
"""Characters kept of one string field of a line a skill caused."""

# The stdlib ``logging`` levels, as numbers (importing ``logging`` is not needed for them).
_DEBUG, _INFO, _WARNING, _ERROR, _CRITICAL = 10, 20, 30, 40, 50
_LEVELS: Final[dict[str, int]] = {
    "debug": _DEBUG,
    "info": _INFO,
    "warning": _WARNING,
    "error": _ERROR,
}
_METHOD_LEVELS: Final[dict[str, int]] = {
    "debug": _DEBUG,
    "info": _INFO,
    "warning": _WARNING,
    "warn": _WARNING,
    "error": _ERROR,
    "err": _ERROR,
    "exception": _ERROR,
    "critical": _CRITICAL,
    "fatal": _CRITICAL,
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


class _State:
    """What ``configure_logging`` asked for, and whether it is applied yet (module-wide)."""

    lock = threading.RLock()
    pending: tuple[str, bool] | None = None
    """(level, json) recorded before structlog was imported; applied on its import."""
    wrapper: Any = None
    """The wrapper class Bastion configured (while it is structlog's, ``floor`` holds)."""
    floor: int = 0
    hook: _ConfigureOnImport | None = None
    unconfigured_floor: int = 0
    """The lowest level written while nothing is configured: structlog's default writes every
    line (to stdout); ``discard_unconfigured`` raises it past every level."""


def _imported() -> bool:
    return "structlog" in sys.modules


def _apply(level: str, json: bool) -> None:
    import structlog

    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    floor = _LEVELS.get(level, _WARNING)
    wrapper = structlog.make_filtering_bound_logger(floor)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=wrapper,
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    _State.wrapper, _State.floor = wrapper, floor


def _apply_pending() -> None:
    with _State.lock:
        pending, _State.pending = _State.pending, None
        if pending is not None:
            _apply(*pending)


class _ApplyAfterExec:
    """A loader that runs structlog's own loader, then applies the pending configuration."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        create = getattr(self._inner, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self._inner
        if module.__spec__ is not None:
            module.__spec__.loader = self._inner
        self._inner.exec_module(module)
        _apply_pending()


class _ConfigureOnImport:
    """``sys.meta_path`` finder: the first import of structlog, by anyone, gets the
    configuration ``configure_logging`` recorded (then this finder removes itself)."""

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name != "structlog":
            return None
        with _State.lock:
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            if _State.hook is self:
                _State.hook = None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find is not None else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _ApplyAfterExec(spec.loader)
                return spec  # type: ignore[no-any-return]
        return None


def _record(level: str, json: bool) -> None:
    """Apply now if structlog is imported, else when it is (``_ConfigureOnImport``)."""
    with _State.lock:
        if _imported():
            _State.pending = None
            _apply(level, json)
            return
        _State.pending = (level, json)
        if _State.hook is None:
            _State.hook = _ConfigureOnImport()
            sys.meta_path.insert(0, _State.hook)


def configure_logging(*, level: str = "warning", json: bool = False) -> None:
    """Send structured logs to stderr at ``level``; JSON lines if ``json`` else console.

    Takes effect for every line written from now on; structlog itself is imported only when
    the first line is written (or when other code imports it)."""
    _record(level, json)


def ensure_logging() -> None:
    """Apply a quiet default (warnings to stderr) unless the embedder configured structlog."""
    with _State.lock:
        if _imported():
            import structlog

            if not structlog.is_configured():
                _State.pending = None
                _apply("warning", False)
        elif _State.pending is None:
            _record("warning", False)


def discard_unconfigured() -> None:
    """Declare that lines written before any configuration go nowhere (a worker process,
    whose stdout, where structlog's default writes, is ``/dev/null``): they are then dropped
    without importing structlog. A later ``configure_logging``, or structlog imported and
    configured by other code, takes effect as usual."""
    _State.unconfigured_floor = _CRITICAL + 1


def _structlog() -> Any:
    """structlog, imported (and the pending configuration applied) on first use."""
    import structlog

    if _State.pending is not None:
        _apply_pending()
    return structlog


def _known_floor() -> int | None:
    """The lowest level structlog writes, when it is known without asking a logger: the
    recorded configuration before structlog is imported (everything if none: structlog's
    default), or the one Bastion applied while it is still in effect."""
    if not _imported():
        pending = _State.pending
        return (
            _LEVELS.get(pending[0], _WARNING) if pending is not None else _State.unconfigured_floor
        )
    if _State.pending is None and _State.wrapper is not None:
        import structlog

        if structlog.get_config()["wrapper_class"] is _State.wrapper:
            return _State.floor
    return None


class LazyLogger:
    """A structlog logger that imports structlog only when it writes a line.

    ``bind``/``new``/``unbind``/``try_unbind`` only record fields; a line whose level is below
    the configured one is dropped at once; any other method call is made on
    ``structlog.get_logger(name).bind(**fields)`` as configured at that moment (the bound
    logger is kept until the configuration changes)."""

    __slots__ = ("_cache", "_ctx", "_name")

    def __init__(self, name: str | None = None, context: Mapping[str, Any] | None = None) -> None:
        self._name = name
        self._ctx: dict[str, Any] = dict(context or {})
        self._cache: tuple[tuple[Any, ...], Any] | None = None

    def bind(self, **fields: Any) -> LazyLogger:
        return LazyLogger(self._name, {**self._ctx, **fields})

    def new(self, **fields: Any) -> LazyLogger:
        return LazyLogger(self._name, fields)

    def unbind(self, *keys: str) -> LazyLogger:
        missing = [k for k in keys if k not in self._ctx]
        if missing:
            raise KeyError(missing[0])
        return self.try_unbind(*keys)

    def try_unbind(self, *keys: str) -> LazyLogger:
        return LazyLogger(self._name, {k: v for k, v in self._ctx.items() if k not in keys})

    def is_enabled_for(self, level: int) -> bool:
        """Whether a line of ``level`` would be written (structlog's filtering loggers)."""
        floor = _known_floor()
        if floor is not None:
            return level >= floor
        check = getattr(self.real(), "is_enabled_for", None)
        return bool(check(level)) if check is not None else True

    def real(self) -> Any:
        """The structlog logger this stands for, under the configuration of the moment."""
        structlog = _structlog()
        args = () if self._name is None else (self._name,)
        if not self._ctx:
            if self._cache is None:
                self._cache = ((), structlog.get_logger(*args))  # a proxy: follows the config
            return self._cache[1]
        config = tuple(structlog.get_config().values())
        cache = self._cache
        if cache is None or cache[0] != config:
            cache = self._cache = (config, structlog.get_logger(*args).bind(**self._ctx))
        return cache[1]

    def _write(self, method: str, event: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
        floor = _known_floor()
        if floor is not None and _METHOD_LEVELS[method] < floor:
            return None
        return getattr(self.real(), method)(event, *args, **kw)

    def debug(self, event: Any = None, *args: Any, **kw: Any) -> Any:
        return self._write("debug", event, args, kw)

    def info(self, event: Any = None, *args: Any, **kw: Any) -> Any:
        return self._write("info", event, args, kw)

    def warning(self, event: Any = None, *args: Any, **kw: Any) -> Any:
        return self._write("warning", event, args, kw)

    warn = warning

    def error(self, event: Any = None, *args: Any, **kw: Any) -> Any:
        return self._write("error", event, args, kw)

    def exception(self, event: Any = None, *args: Any, **kw: Any) -> Any:
        return self._write("exception", event, args, kw)

    def critical(self, event: Any = None, *args: Any, **kw: Any) -> Any:
        return self._write("critical", event, args, kw)

    fatal = critical

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.real(), name)  # msg, log, the async methods, ...


def get_logger(name: str | None = None) -> LazyLogger:
    """The logger a module keeps (``log = get_logger("bastion.x")``): free at import time,
    ``structlog.get_logger(name)`` when it writes."""
    return LazyLogger(name)


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
        if isinstance(self._logger, LazyLogger):  # binding records fields: nothing to cache
            return self._logger.bind(skill=skill, pack=pack, **fields)
        structlog = _structlog()
        config = tuple(structlog.get_config().values())
        if config != self._config:
            self._bases, self._config = {}, config
        bases = self._bases
        base = bases.get((skill, pack))
        if base is None:
            base = bases[(skill, pack)] = self._logger.bind(skill=skill, pack=pack)
        return base.bind(**fields)


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
        return self.is_enabled_for(_METHOD_LEVELS[method])

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
