"""The ``bastion:skill/host`` interface for components, on one process-wide ``Linker``.

wasmtime-py 50 passes every component host function the calling ``StoreContext`` first, so the
linker (WASI p2 + ``http``, ``secret``, ``log``) is built **once per process** and each call
finds its invocation through the store: ``store.state_for(context_key(ctx))`` gives the
``InvocationState`` that ``store.Sandbox`` registered (the request's caps, logger, deadline).
Per-invocation WASI (empty env, ``argv = [skill]``, mounts with explicit ``fs_mutable``, capped
stdout/stderr) is the ``Sandbox``'s job; this module only defines imports.

- ``http`` -> ``hostnet.HostHttp`` (one client per invocation, closed by ``close_invocation``);
  ``ExecutionError`` codes map to the ``http-error`` cases: ``NETWORK_DENIED`` -> ``denied``,
  ``TIMEOUT`` -> ``timeout``, ``OUTPUT_LIMIT`` -> ``too-large``, anything else -> ``failed``.
- ``secret`` -> ``request.caps.secrets`` only (``none`` for anything not granted).
- ``log`` -> ``request.logger`` (bound with skill, pack, invocation); bounded lines and length
  (the kernel's ``InvocationLog`` redacts and caps, with a summary line; any other logger is
  capped here at ``MAX_LOG_LINES``).

HTTP bodies cross as base64 text (``body-b64``), not ``list<u8>``: wasmtime-py's C API turns
every byte of a list into a 32-byte value converted one by one in Python (1 MiB took ~1 s and
256 MiB of host memory for 8 MiB), while a string is one UTF-8 copy.

Host functions never let a Python exception escape (wasmtime-py would keep it in a
process-global); to stop the guest on purpose they raise ``WasmtimeError("bastion:<reason>")``,
which becomes a trap carrying that message. A call made after the deadline traps with TIMEOUT.
"""

from __future__ import annotations

import base64
import binascii
import threading
from typing import Any, Final

import wasmtime
from wasmtime.component import Linker, Record, Variant

from bastion.errors import ErrorCode, ExecutionError
from bastion.logs import get_logger

from .engine import get_engine
from .linksweep import call_started_ns, sweep_links
from .rawcall import TRAP_PREFIX, context_key
from .store import InvocationState, state_for
from .ticker import remaining_ms

__all__ = [
    "HOST_INTERFACE",
    "MAX_LOG_BYTES",
    "MAX_LOG_LINES",
    "close_invocation",
    "component_linker",
]

HOST_INTERFACE: Final[str] = "bastion:skill/host@0.1.0"
MAX_LOG_LINES: Final[int] = 1000
"""Log lines kept per invocation; later ones are counted and dropped."""
MAX_LOG_BYTES: Final[int] = 4096
"""Characters kept of one log line."""

_HTTP_CLIENT: Final[str] = "http_client"
_LOG_LINES: Final[str] = "log_lines"
_ERROR_CASES: Final[dict[ErrorCode, str]] = {
    ErrorCode.NETWORK_DENIED: "denied",
    ErrorCode.TIMEOUT: "timeout",
    ErrorCode.OUTPUT_LIMIT: "too-large",
}
_LEVELS: Final[frozenset[str]] = frozenset({"debug", "info", "warning", "error"})

_log = get_logger("bastion.sandbox.hostlink")
_linker: Linker | None = None
_linker_lock = threading.Lock()


def _trap(reason: str) -> wasmtime.WasmtimeError:
    return wasmtime.WasmtimeError(f"{TRAP_PREFIX}{reason}")


def _timeout(st: InvocationState) -> wasmtime.WasmtimeError:
    st.timed_out = True
    st.host_error = ExecutionError(
        ErrorCode.TIMEOUT, f"skill exceeded its time limit of {st.limits.timeout_ms} ms"
    )
    return _trap("timeout")


def _state(store: Any) -> InvocationState:
    """The caller's invocation, after the wall-clock deadline check (traps if none / past)."""
    st = state_for(context_key(store._context()))
    if st is None:
        raise _trap("no-invocation")
    if remaining_ms(st.deadline) <= 0:
        raise _timeout(st)
    return st


def _logger(st: InvocationState) -> Any:
    return getattr(st.request, "logger", None) or _log


def _caps(st: InvocationState) -> Any:
    return getattr(st.request, "caps", None)


# -- http -------------------------------------------------------------------------------------


def _client(st: InvocationState) -> Any:
    client = st.extra.get(_HTTP_CLIENT)
    if client is None:
        from .hostnet import HostHttp

        caps = _caps(st)
        client = HostHttp(
            rules=getattr(caps, "network", ()),
            private_allow=getattr(caps, "private_allow", ()),
            deadline=st.deadline,
            secrets=tuple((getattr(caps, "secrets", None) or {}).values()),
            audit=getattr(st.request, "audit", None),
            logger=_logger(st),
            skill=st.skill,
            stub=getattr(caps, "http_stub", None),
        )
        st.extra[_HTTP_CLIENT] = client
    return client


def _response(status: int, headers: Any, body: bytes, url: str) -> Record:
    rec = Record()
    fields: dict[str, Any] = {
        "status": int(status),
        "headers": [(str(k), str(v)) for k, v in headers],
        "body-b64": base64.b64encode(body).decode("ascii"),
        "url": str(url),
    }
    rec.__dict__.update(fields)  # wasmtime-py reads record fields as attributes
    return rec


def _host_http(store: Any, request: Any) -> Record | Variant:
    st = _state(store)
    timeout_ms = getattr(request, "timeout-ms", None)
    body_b64 = getattr(request, "body-b64", None)
    try:
        body = None if body_b64 is None else base64.b64decode(body_b64, validate=True)
    except (binascii.Error, ValueError):
        return Variant("failed", "the request body is not valid base64")
    left = remaining_ms(st.deadline)
    timeout = int(left) if timeout_ms is None else min(int(left), max(int(timeout_ms), 1))
    try:
        resp = _client(st).request(
            str(request.method),
            str(request.url),
            list(request.headers),
            body,
            timeout,
        )
    except ExecutionError as exc:
        if exc.error_code is ErrorCode.TIMEOUT and remaining_ms(st.deadline) <= 0:
            raise _timeout(st) from None
        st.last_denial = exc
        return Variant(_ERROR_CASES.get(exc.error_code, "failed"), exc.message)
    except ImportError:
        return Variant("failed", "network access is not available in this installation")
    except Exception as exc:  # never into wasmtime
        _logger(st).error("skill.http_failed", error=repr(exc)[:500])
        return Variant("failed", "the host could not perform the request")
    return _response(resp.status, resp.headers, resp.body, resp.url)


# -- secret -----------------------------------------------------------------------------------


def _host_secret(store: Any, name: str) -> str | None:
    st = _state(store)
    secrets = getattr(_caps(st), "secrets", None) or {}
    value = secrets.get(name)
    _logger(st).debug("skill.secret", name=name[:200], granted=value is not None)
    return None if value is None else str(value)


# -- log --------------------------------------------------------------------------------------


def _host_log(store: Any, level: str, message: str) -> None:
    st = _state(store)
    logger = _logger(st)
    if not getattr(logger, "rate_limited", False):  # an InvocationLog caps (and counts) itself
        count = int(st.extra.get(_LOG_LINES, 0)) + 1
        st.extra[_LOG_LINES] = count
        if count > MAX_LOG_LINES:
            return None
    name = level if level in _LEVELS else "info"
    getattr(logger, name)(
        "skill.log",
        skill=st.skill,
        text=message[:MAX_LOG_BYTES],
        truncated=len(message) > MAX_LOG_BYTES,
    )
    return None


def _failure_logger(store: Any) -> Any:
    """The calling invocation's logger (redacting, rate-limited), else the module's."""
    try:
        st = state_for(context_key(store._context()))
    except Exception:
        st = None
    return _log if st is None else _logger(st)


def _safe(fn: Any) -> Any:
    """Wrap a host function so only ``WasmtimeError`` (a deliberate trap) can leave it."""

    def wrapper(store: Any, *args: Any) -> Any:
        try:
            return fn(store, *args)
        except wasmtime.WasmtimeError:
            raise
        except BaseException as exc:
            _failure_logger(store).error("hostfn.failed", func=fn.__name__, error=repr(exc)[:500])
            raise _trap("host-error") from None

    wrapper.__name__ = fn.__name__
    return wrapper


# -- linker -----------------------------------------------------------------------------------


def _build() -> Linker:
    linker = Linker(get_engine())
    linker.add_wasip2()
    with linker.root() as root, root.add_instance(HOST_INTERFACE) as host:
        host.add_func("http", _safe(_host_http))
        host.add_func("secret", _safe(_host_secret))
        host.add_func("log", _safe(_host_log))
    return linker


def component_linker() -> Linker:
    """The process-wide linker for components: WASI p2 and ``bastion:skill/host``."""
    global _linker
    linker = _linker
    if linker is not None:
        return linker
    with _linker_lock:
        if _linker is None:
            _linker = _build()
        return _linker


def close_invocation(st: InvocationState) -> None:
    """Release what host functions opened for one invocation (its HTTP client), and remove
    the symlinks the call left in writable mounts (``linksweep``: components cannot be kept
    from creating them)."""
    mounts = getattr(_caps(st), "mounts", ())
    if any(m.writable for m in mounts):
        since = call_started_ns(st.deadline, st.limits.timeout_ms)
        sweep_links(mounts, since, logger=_logger(st))
    client = st.extra.pop(_HTTP_CLIENT, None)
    if client is not None:
        try:
            client.close()
        except Exception as exc:  # closing must not mask the call's outcome
            _log.warning("hostlink.close_failed", error=repr(exc)[:200])
