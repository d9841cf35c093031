"""``asyncio`` in the sandbox: an event loop with timers and tasks but no sockets or threads.

WASI offers no self-pipe (``socketpair``) and no threads, so the standard selector loop cannot
start. ``SandboxLoop`` keeps everything of ``asyncio.BaseEventLoop`` (tasks, futures, timers,
``gather``, ``wait_for``, ``sleep``) and waits for the next timer with ``time.sleep``. It is
installed as the default, so ``asyncio.run`` works in a skill, and an ``async def run`` is run
to completion by the runner.
"""

import asyncio
import asyncio.base_events
import asyncio.events
import time

__all__ = ["SandboxLoop", "run_to_completion"]


class _NoSelector:
    """What ``BaseEventLoop._run_once`` asks for: wait ``timeout`` seconds, report no I/O."""

    def select(self, timeout=None):
        if timeout is None:
            raise RuntimeError(
                "the event loop has nothing to wait for: every task is waiting on something "
                "that can never happen in the sandbox (no sockets, threads or processes)"
            )
        if timeout > 0:
            time.sleep(timeout)
        return []

    def close(self):
        pass


class SandboxLoop(asyncio.base_events.BaseEventLoop):
    """An event loop for the sandbox: timers and tasks; no I/O, signals or threads."""

    def __init__(self):
        super().__init__()
        self._selector = _NoSelector()

    def _process_events(self, event_list):
        pass

    def _write_to_self(self):
        pass

    def _make_self_pipe(self):
        pass


_PolicyBase = getattr(asyncio.events, "_BaseDefaultEventLoopPolicy", None) or getattr(
    asyncio.events, "BaseDefaultEventLoopPolicy"
)


class _Policy(_PolicyBase):
    _loop_factory = SandboxLoop


asyncio.events._event_loop_policy = _Policy()


def run_to_completion(coro):
    """Run a coroutine (an ``async def run``'s result) on a fresh ``SandboxLoop``."""
    with asyncio.Runner(loop_factory=SandboxLoop) as runner:
        return runner.run(coro)
