"""Host functions for WASI command modules: the ``bastion`` import module.

WASI preview 1 has no sockets; a module reaches the network, its granted secrets and the host
log only through these imports (all integers are i32; pointers and lengths are offsets into the
module's exported ``memory``)::

    (import "bastion" "http"   (func (param $req_ptr i32) (param $req_len i32) (result i32)))
    (import "bastion" "take"   (func (param $out_ptr i32) (param $out_cap i32) (result i32)))
    (import "bastion" "secret" (func (param $name_ptr i32) (param $name_len i32)
                                      (param $out_ptr i32) (param $out_cap i32) (result i32)))
    (import "bastion" "log"    (func (param $level i32) (param $ptr i32) (param $len i32)))

``http(req, len) -> n``
    ``req`` is UTF-8 JSON ``{"method": "GET", "url": "https://...", "headers": [["k", "v"]],
    "body_b64": "...", "timeout_ms": 5000}`` (only ``url`` is required; method defaults to GET).
    The host checks the URL against the skill's granted network rules and performs the request
    (DNS checked, redirects re-checked, size and time capped). The response is held by the host
    and ``n`` is its length in bytes: JSON ``{"status": 200, "headers": [["k", "v"]],
    "body_b64": "...", "url": "final url"}`` or ``{"error": {"code": "NETWORK_DENIED",
    "message": "..."}}``. Fetch it with ``take``. A request larger than 8 MiB returns -1.
``take(out, cap) -> n``
    Copies the pending response into ``[out, out+cap)`` and returns its length ``n``. If
    ``n > cap`` nothing is copied and the response stays pending (call again with a buffer of
    ``n`` bytes). Returns -1 if no response is pending.
``secret(name, name_len, out, cap) -> n``
    Writes the value of a *granted* secret (``[permissions] secrets``) and returns its length;
    ``n > cap`` means the buffer is too small (nothing written); -1 if the secret is not granted.
``log(level, ptr, len)``
    Logs UTF-8 text (first 4 KiB) to the host log with the skill's name; level 0 debug,
    1 info, 2 warning, 3+ error. At most 1000 lines per invocation; more are dropped.

Safety: every pointer/length pair is bounds-checked against the guest memory; a bad one traps
the guest (``SKILL_CRASHED``: "invalid pointer passed to a host function"), never the host.
Every call first checks the invocation's wall-clock deadline and traps with ``TIMEOUT`` once it
has passed (epochs do not interrupt a guest while it is inside a host call).

``wasi_snapshot_preview1.path_symlink`` and ``path_link`` are shadowed too: they return errno
``perm`` (63), so a module cannot leave a link in a writable mount (see ``_no_links``).

The module also shadows ``wasi_snapshot_preview1.poll_oneoff`` (used by ``sleep``/``nanosleep``):
a clock wait is capped at the time remaining before the deadline and the guest traps with
``TIMEOUT`` if the deadline comes first. fd subscriptions are reported ready at once (stdin is
in memory, stdout/stderr never block). Absolute monotonic-clock waits return ``ENOTSUP``.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
import time
from typing import Any, Final

import wasmtime

from bastion.errors import ErrorCode, ExecutionError
from bastion.logs import get_logger

from .rawcall import GuestTrap, HostCall, HostFn, define_host_func
from .store import InvocationState, state_for
from .ticker import remaining_ms

__all__ = ["HOST_MODULE", "MAX_LOG_LINES", "MAX_REQUEST", "define_host_abi"]

HOST_MODULE: Final[str] = "bastion"
MAX_REQUEST: Final[int] = 8 * 1024 * 1024
MAX_LOG_LINES: Final[int] = 1000
_MAX_LOG_BYTES: Final[int] = 4096
_MAX_SUBS: Final[int] = 1024
_PENDING: Final[str] = "http_pending"

# WASI errno values
_EFAULT: Final[int] = 21
_EINVAL: Final[int] = 28
_ENOTSUP: Final[int] = 58

_log = get_logger("bastion.sandbox.hostabi")
_I32 = wasmtime.ValType.i32()


def _state(hc: HostCall) -> InvocationState:
    """The caller's invocation state, after the wall-clock deadline check."""
    st = state_for(hc.key)
    if st is None:
        raise GuestTrap("no-invocation")
    if remaining_ms(st.deadline) <= 0:
        _timeout(st)
    return st


def _timeout(st: InvocationState) -> None:
    st.timed_out = True
    st.host_error = ExecutionError(
        ErrorCode.TIMEOUT, f"skill exceeded its time limit of {st.limits.timeout_ms} ms"
    )
    raise GuestTrap("timeout")


def _logger(st: InvocationState) -> Any:
    req = st.request
    return getattr(req, "logger", None) or _log


# -- bastion.log ------------------------------------------------------------------------------

_LEVELS: Final[tuple[str, ...]] = ("debug", "info", "warning", "error")


def _host_log(hc: HostCall) -> None:
    st = _state(hc)
    level, ptr, length = hc.args
    text = hc.memory().read(ptr, min(length, _MAX_LOG_BYTES))
    hc.memory().check(ptr, length)
    logger = _logger(st)
    if not getattr(logger, "rate_limited", False):  # an InvocationLog caps (and counts) itself
        count = int(st.extra.get("log_lines", 0)) + 1
        st.extra["log_lines"] = count
        if count > MAX_LOG_LINES:
            return None
    name = _LEVELS[min(level, len(_LEVELS) - 1)]
    getattr(logger, name)(
        "skill.log",
        skill=st.skill,
        text=text.decode("utf-8", "replace"),
        truncated=length > _MAX_LOG_BYTES,
    )
    return None


# -- bastion.secret ---------------------------------------------------------------------------


def _host_secret(hc: HostCall) -> int:
    st = _state(hc)
    name_ptr, name_len, out_ptr, out_cap = hc.args
    mem = hc.memory()
    name = mem.read(name_ptr, name_len).decode("utf-8", "replace")
    secrets = getattr(getattr(st.request, "caps", None), "secrets", None) or {}
    value = secrets.get(name)
    if value is None:
        return -1
    data = str(value).encode("utf-8")
    if len(data) <= out_cap:
        mem.write(out_ptr, data)
    return len(data)


# -- bastion.http / bastion.take --------------------------------------------------------------


def _error_json(code: ErrorCode | str, message: str) -> bytes:
    return json.dumps({"error": {"code": str(code), "message": message}}).encode()


def _parse_request(raw: bytes) -> tuple[str, str, list[tuple[str, str]], bytes, int | None]:
    req = json.loads(raw)
    if not isinstance(req, dict) or not isinstance(req.get("url"), str):
        raise ValueError('request must be a JSON object with a string "url"')
    method = req.get("method", "GET")
    if not isinstance(method, str):
        raise ValueError(f'"method" must be a string, got {method!r}')
    headers_in = req.get("headers", [])
    if isinstance(headers_in, dict):
        headers_in = list(headers_in.items())
    headers = [(str(k), str(v)) for k, v in headers_in]
    body = base64.b64decode(req.get("body_b64") or "", validate=True)
    timeout = req.get("timeout_ms")
    return method, req["url"], headers, body, int(timeout) if timeout is not None else None


def _do_http(st: InvocationState, raw: bytes) -> bytes:
    try:
        method, url, headers, body, timeout_ms = _parse_request(raw)
    except (ValueError, TypeError, binascii.Error) as exc:
        return _error_json(ErrorCode.INVALID_INPUT, f"bad http request: {str(exc)[:200]}")
    left = remaining_ms(st.deadline)
    timeout_ms = int(left) if timeout_ms is None else min(int(left), max(timeout_ms, 1))
    req = st.request
    caps = getattr(req, "caps", None)
    try:
        from .hostnet import HostHttp  # lands separately; imported when first used

        client = st.extra.get("http_client")
        if client is None:
            client = HostHttp(
                rules=getattr(caps, "network", ()),
                private_allow=getattr(caps, "private_allow", ()),
                deadline=st.deadline,
                secrets=tuple((getattr(caps, "secrets", None) or {}).values()),
                audit=getattr(req, "audit", None),
                logger=_logger(st),
                skill=st.skill,
                stub=getattr(caps, "http_stub", None),
            )
            st.extra["http_client"] = client
        resp = client.request(method, url, headers, body, timeout_ms)
    except ExecutionError as exc:
        if exc.error_code is ErrorCode.TIMEOUT and remaining_ms(st.deadline) <= 0:
            _timeout(st)
        st.last_denial = exc
        return _error_json(exc.error_code, exc.message)
    except ImportError:
        exc2 = ExecutionError(ErrorCode.NETWORK_DENIED, "network access is not available")
        st.last_denial = exc2
        return _error_json(exc2.error_code, exc2.message)
    return json.dumps(
        {
            "status": resp.status,
            "headers": [list(h) for h in _header_pairs(resp.headers)],
            "body_b64": base64.b64encode(resp.body).decode("ascii"),
            "url": str(resp.url),
        }
    ).encode()


def _header_pairs(headers: Any) -> list[tuple[str, str]]:
    items = headers.items() if hasattr(headers, "items") else headers
    return [(str(k), str(v)) for k, v in items]


def _host_http(hc: HostCall) -> int:
    st = _state(hc)
    ptr, length = hc.args
    if length > MAX_REQUEST:
        hc.memory().check(ptr, length)
        return -1
    raw = hc.memory().read(ptr, length)
    out = _do_http(st, raw)
    st.extra[_PENDING] = out
    return len(out)


def _host_take(hc: HostCall) -> int:
    st = _state(hc)
    out_ptr, out_cap = hc.args
    pending: bytes | None = st.extra.get(_PENDING)
    if pending is None:
        return -1
    if len(pending) <= out_cap:
        hc.memory().write(out_ptr, pending)
        del st.extra[_PENDING]
    return len(pending)


# -- wasi_snapshot_preview1.poll_oneoff (shadowed) -------------------------------------------

_SUB = struct.Struct("<QB7xIxxxxQQH6x")  # userdata, tag, clock id, timeout, precision, flags
_SUB_SIZE: Final[int] = 48
_EVT_SIZE: Final[int] = 32
_CLOCK_REALTIME: Final[int] = 0
_ABSTIME: Final[int] = 1


def _event(userdata: int, error: int, kind: int) -> bytes:
    return struct.pack("<QHB5xQH6x", userdata, error, kind, 0, 0)


def _poll_oneoff(hc: HostCall) -> int:
    st = _state(hc)
    in_ptr, out_ptr, nsubs, nevents_ptr = hc.args
    if nsubs == 0 or nsubs > _MAX_SUBS:
        return _EINVAL
    mem = hc.memory()
    try:
        raw = mem.read(in_ptr, nsubs * _SUB_SIZE)
        mem.check(out_ptr, nsubs * _EVT_SIZE)
        mem.check(nevents_ptr, 4)
    except GuestTrap:
        return _EFAULT
    subs = [raw[i * _SUB_SIZE : (i + 1) * _SUB_SIZE] for i in range(nsubs)]
    ready_fd = [(struct.unpack_from("<Q", s)[0], s[8]) for s in subs if s[8] in (1, 2)]
    events: list[bytes] = []
    if ready_fd:
        events = [_event(ud, 0, tag) for ud, tag in ready_fd]
    else:
        waits: list[tuple[int, int]] = []
        for s in subs:
            userdata, tag, clock, timeout, _prec, flags = _SUB.unpack(s)
            if tag != 0:
                return _EINVAL
            if flags & _ABSTIME:
                if clock != _CLOCK_REALTIME:
                    return _ENOTSUP
                timeout = max(timeout - time.time_ns(), 0)
            waits.append((timeout, userdata))
        wait_ns = min(w for w, _ in waits)
        left_ns = remaining_ms(st.deadline) * 1e6
        if wait_ns >= left_ns:
            time.sleep(max(left_ns, 0) / 1e9)
            _timeout(st)
        time.sleep(wait_ns / 1e9)
        events = [_event(ud, 0, 0) for w, ud in waits if w <= wait_ns]
    mem = hc.memory()  # re-fetch: nothing grew it, but stay safe
    mem.write(out_ptr, b"".join(events))
    mem.write(nevents_ptr, struct.pack("<I", len(events)))
    return 0


# -- links: wasi_snapshot_preview1.path_symlink / path_link ------------------------------------

_EPERM: Final[int] = 63  # WASI errno "perm"


def _no_links(hc: HostCall) -> int:
    """A skill may not create a symlink or a hard link in any mount (wasmtime's own check lets
    a symlink with a relative target point anywhere, e.g. ``../../etc/passwd``, and a host
    process that follows links later would leave the mount through it)."""
    st = _state(hc)
    _logger(st).debug("skill.link_refused", skill=st.skill)
    return _EPERM


_FUNCS: Final[tuple[tuple[str, str, int, int, HostFn], ...]] = (
    (HOST_MODULE, "http", 2, 1, _host_http),
    (HOST_MODULE, "take", 2, 1, _host_take),
    (HOST_MODULE, "secret", 4, 1, _host_secret),
    (HOST_MODULE, "log", 3, 0, _host_log),
    ("wasi_snapshot_preview1", "poll_oneoff", 4, 1, _poll_oneoff),
    # (old_path, old_len, fd, new_path, new_len) -> errno
    ("wasi_snapshot_preview1", "path_symlink", 5, 1, _no_links),
    # (old_fd, old_flags, old_path, old_len, new_fd, new_path, new_len) -> errno
    ("wasi_snapshot_preview1", "path_link", 7, 1, _no_links),
)


def _guarded(fn: HostFn, qual: str) -> HostFn:
    """``fn``, with a host error logged through the invocation's logger (redacted, capped)
    before it traps the guest (``rawcall``'s own last resort logs to the module logger)."""

    def call(hc: HostCall) -> Any:
        try:
            return fn(hc)
        except GuestTrap:
            raise
        except Exception as exc:
            st = state_for(hc.key)
            logger = _log if st is None else _logger(st)
            logger.error("hostfn.failed", func=qual, error=repr(exc)[:500])
            raise GuestTrap("host-error") from None

    return call


def define_host_abi(linker: wasmtime.Linker) -> None:
    """Define the ``bastion`` imports and the shadowed ``poll_oneoff``, ``path_symlink`` and
    ``path_link`` in ``linker``.

    Call after ``linker.define_wasi()``; shadowing is switched on for this.
    """
    linker.allow_shadowing = True
    for module, name, nparams, nresults, fn in _FUNCS:
        guarded = _guarded(fn, f"{module}.{name}")
        define_host_func(linker, module, name, [_I32] * nparams, [_I32] * nresults, guarded)
