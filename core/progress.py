"""Progress for long work at the terminal: shown only if the work turns out to be slow."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["progress_after"]


def progress_after(delay: float, message: str, out: TextIO) -> Callable[[], None]:
    """Print ``message`` (then dots) if the work takes longer than ``delay``; returns a stopper."""
    done = threading.Event()
    start = time.monotonic()

    def run() -> None:
        if done.wait(delay):
            return
        out.write(message)
        out.flush()
        while not done.wait(1.0):
            out.write(".")
            out.flush()
        out.write(f" done ({time.monotonic() - start:.1f} s)\n")
        out.flush()

    t = threading.Thread(target=run, daemon=True)
    t.start()

    def stop() -> None:
        done.set()
        t.join()

    return stop
