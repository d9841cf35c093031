"""Starting a worker process, and starting one *before* the kernel exists (``bastion run``).

``spawn(entry)`` is how the pool starts every worker: ``python -I`` with an empty environment,
only the socket's child end passed (``pass_fds``), stdin and stdout on ``/dev/null``, stderr a
pipe for crash reports, its own session. The worker imports what it needs and then waits for
the pool's *hello* frame (cache, limits, Landlock paths, what to preload).

``prespawn()`` does the same at the very start of a one-shot command, before the kernel's own
imports, policy and discovery, and names the default cache: the worker's interpreter start,
imports, engine and runner load (all of its start but the OS limits) then run on the second
CPU while the kernel prepares, instead of after it (a hello that names another cache or
engine makes the worker start again, ``entry.serve``). The first
``WorkerPool`` that needs a worker with the same entry ``take()``\\ s it and sends the hello as
for any worker; nothing about the call is known or sent before that. An unused one is killed
and reaped at exit (``discard()``).
"""

from __future__ import annotations

import atexit
import contextlib
import socket
import subprocess
import sys
import threading
import time
from typing import Final

__all__ = ["DEFAULT_ENTRY", "Spawned", "discard", "prespawn", "spawn", "take"]

DEFAULT_ENTRY: Final[tuple[str, ...]] = ("-m", "bastion.sandbox.workers.entry")

Spawned = tuple[subprocess.Popen[bytes], socket.socket, float]
"""A started worker process, the kernel's end of its socket, and when it was started."""

_lock = threading.Lock()
_ready: dict[tuple[str, ...], Spawned] = {}


def spawn(entry: tuple[str, ...] = DEFAULT_ENTRY, *, early_cache: str | None = None) -> Spawned:
    """Start one worker process (it then waits for its hello frame); with ``early_cache``, it
    loads the runner from that cache before the hello (``entry.serve``)."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    early = [] if early_cache is None else ["--cache", early_cache]
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", *entry, str(child.fileno()), *early],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=(child.fileno(),),
            env={},
            close_fds=True,
            start_new_session=True,
        )
    except BaseException:
        parent.close()
        raise
    finally:
        child.close()
    return proc, parent, time.monotonic()


def prespawn(entry: tuple[str, ...] = DEFAULT_ENTRY) -> None:
    """Start a worker now for a pool made later in this process (at most one per entry); it
    is told the default cache (the one the kernel's pool will name), so it loads the runner
    before its hello."""
    from bastion.cachedir import default_cache_root

    with _lock:
        if entry in _ready:
            return
        _ready[entry] = spawn(entry, early_cache=str(default_cache_root()))


def take(entry: tuple[str, ...]) -> Spawned | None:
    """The prespawned worker for ``entry`` if there is one still alive (it is then the
    caller's); else None."""
    with _lock:
        got = _ready.pop(entry, None)
    if got is None:
        return None
    if got[0].poll() is not None:  # died before it was used (e.g. killed from outside)
        _close(got)
        return None
    return got


def _close(got: Spawned) -> None:
    proc, sock, _ = got
    with contextlib.suppress(OSError):
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    sock.close()
    if proc.stderr is not None:
        proc.stderr.close()


def discard() -> None:
    """Kill and reap every prespawned worker no pool took (no zombie, no open socket)."""
    with _lock:
        items = list(_ready.values())
        _ready.clear()
    for got in items:
        _close(got)


atexit.register(discard)
