"""A worker entry used only by tests: the real worker plus an ``attack`` runtime.

Started by a ``WorkerPool`` whose ``WorkerSettings.entry`` points at this file; the pool the
kernel builds never runs it, so no guest can reach these actions. Each call's input names one
thing to try *after* the OS limits are in force; the output says what the OS answered.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time
from typing import Any


def _errno_of(fn: Any) -> dict[str, Any]:
    try:
        fn()
    except OSError as exc:
        return {"refused": True, "errno": exc.errno}
    return {"refused": False}


def _read(path: str) -> None:
    with open(path, "rb") as f:
        f.read()


def _write(path: str) -> None:
    with open(path, "wb") as f:
        f.write(b"x")


def _open_many(n: int) -> dict[str, Any]:
    fds: list[int] = []
    try:
        for _ in range(n):
            fds.append(os.open("/dev/null", os.O_RDONLY))
    except OSError as exc:
        return {"refused": True, "errno": exc.errno, "opened": len(fds)}
    finally:
        for fd in fds:
            os.close(fd)
    return {"refused": False, "opened": len(fds)}


def _open_fds() -> dict[int, str]:
    """Every open descriptor and what it is (``?`` when Landlock hides ``/proc``)."""
    out: dict[int, str] = {}
    for fd in range(0, 1024):
        try:
            os.fstat(fd)
        except OSError:
            continue
        try:
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            out[fd] = "?"
    return out


def attack(request: Any) -> bytes:
    what = json.loads(request.input_json)["do"]
    result: dict[str, Any]
    if what == "read_passwd":
        result = _errno_of(lambda: _read("/etc/passwd"))
    elif what == "write_tmp":
        result = _errno_of(lambda: _write("/tmp/bastion-attack-probe"))
    elif what == "exec":
        result = _errno_of(lambda: os.execv("/bin/true", ["true"]))
    elif what == "fork_exec":
        result = _errno_of(lambda: os.posix_spawn("/bin/true", ["true"], {}))
    elif what == "open_many":
        result = _open_many(100_000)
    elif what == "state":
        result = {"env": sorted(os.environ), "fds": _open_fds(), "pid": os.getpid()}
    elif what == "abort":
        os.abort()
    elif what == "panic":
        os.write(2, b"thread '<unnamed>' panicked at a test-only spot\n")
        os.abort()
    elif what == "segv":
        ctypes.string_at(1)  # a real fault at address 1 (wasmtime's handler passes it on)
    elif what == "kill9":
        os.kill(os.getpid(), signal.SIGKILL)
    elif what == "exit":
        os._exit(3)
    elif what == "sleep":
        time.sleep(60)
        result = {}
    elif what == "busy_past_deadline":  # on the CPU (host code) until 0.3 s past the deadline
        while time.monotonic() < request.deadline + 0.3:
            pass
        result = {"answered": "late, running"}
    elif what == "nap_past_deadline":  # asleep until 0.3 s past the deadline, then answers
        time.sleep(max(request.deadline + 0.3 - time.monotonic(), 0.0))
        result = {"answered": "late, asleep"}
    elif what == "garbage":
        sock_fd = int(sys.argv[1])
        os.write(sock_fd, b"\xff\xff\xff\xff\x00\x00\x00\x00")
        time.sleep(60)
        result = {}
    else:
        raise ValueError(what)
    return json.dumps(result).encode()


if __name__ == "__main__":
    from bastion.sandbox.workers.entry import serve

    sys.exit(serve(extra={"attack": attack}))
