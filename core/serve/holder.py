"""The serving kernel and its atomic replacement when the policy or the installed packs change.

Serving step ``MCP dispatch -> holder -> kernel``: every request takes the current
``Generation`` (kernel + tool catalog) for its whole life; ``reload()`` builds a new kernel
beside it and swaps it in with one assignment, so a request never sees half a policy. A new
policy that fails to load keeps the old one serving and is reported. A retired kernel is
closed once its last request ends, so no call loses its kernel mid-flight.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from bastion.errors import ConfigError
from bastion.kernel import Kernel
from bastion.policy import find_policy_path

from .tools import ToolCatalog

__all__ = ["Generation", "KernelHolder", "watched_mtimes"]

log = structlog.get_logger("bastion.serve")


@dataclass
class Generation:
    """One kernel and its catalog; ``users`` counts the requests still holding it."""

    kernel: Kernel
    catalog: ToolCatalog
    number: int
    attachments: dict[str, Any] = field(default_factory=dict)
    """What the server derives from this kernel's policy (e.g. its bearer tokens)."""
    users: int = 0
    retired: bool = False
    prepared: set[str] = field(default_factory=set)
    """Skills already prepared in this generation (the first call of each prepares it)."""
    _lock: threading.Lock = field(default_factory=threading.Lock)


def _tree_mtime(path: Path, limit: int = 2000) -> float:
    """Newest mtime under ``path`` (bounded walk): a pack folder edited in place."""
    newest = 0.0
    seen = 0
    try:
        for root, dirs, files in os.walk(path):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in [*files, "."]:
                seen += 1
                if seen > limit:
                    return newest
                with contextlib.suppress(OSError):
                    newest = max(newest, os.stat(os.path.join(root, name)).st_mtime)
    except OSError:
        pass
    return newest


def watched_mtimes(policy_path: Path | None, packs: Sequence[Path]) -> tuple[float, ...]:
    """What a change of policy or packs moves: the policy file, each ``--pack`` folder, and
    the site-packages folders (a ``pip install`` adds a ``.dist-info`` folder there)."""
    out: list[float] = []
    for p in [policy_path] if policy_path is not None else []:
        try:
            out.append(p.stat().st_mtime)
        except OSError:
            out.append(-1.0)
    out += [_tree_mtime(p) for p in packs]
    for entry in sys.path:
        if entry.endswith("site-packages"):
            with contextlib.suppress(OSError):
                out.append(os.stat(entry).st_mtime)
    return tuple(out)


class KernelHolder:
    """Holds the current generation; ``reload()`` is the one place a kernel is swapped."""

    def __init__(
        self,
        factory: Callable[[], Kernel],
        *,
        policy_path: Path | None = None,
        packs: Sequence[Path] = (),
        attach: Callable[[Kernel], dict[str, Any]] | None = None,
    ) -> None:
        """``attach(kernel)`` derives per-generation attachments; a ``ConfigError`` from it
        refuses the kernel like a bad policy would."""
        self._factory = factory
        self._attach = attach
        self._policy_path = policy_path
        self._packs = tuple(packs)
        self._swap = threading.Lock()
        self._current = self._generation(factory(), 1)
        self._mtimes = watched_mtimes(policy_path, self._packs)
        self.last_error: str | None = None
        """Why the last reload was refused (the old policy kept serving), or None."""

    def _generation(self, kernel: Kernel, number: int) -> Generation:
        try:
            attachments = self._attach(kernel) if self._attach is not None else {}
        except BaseException:
            kernel.close()
            raise
        return Generation(kernel, ToolCatalog(kernel), number, attachments)

    def set_attach(self, attach: Callable[[Kernel], dict[str, Any]]) -> None:
        """Install ``attach`` and apply it to the current generation (server set-up)."""
        self._attach = attach
        self._current.attachments = attach(self._current.kernel)

    @classmethod
    def from_args(cls, policy: str | None, packs: Sequence[Path], **kernel_kw: Any) -> KernelHolder:
        """A holder that rebuilds from the same ``--policy`` and ``--pack`` options."""
        path = find_policy_path(policy)
        pack_list = [Path(p) for p in packs]

        def build() -> Kernel:
            return Kernel.from_policy(path, pack_paths=pack_list, **kernel_kw)

        return cls(build, policy_path=path, packs=pack_list)

    @property
    def current(self) -> Generation:
        return self._current

    @contextmanager
    def use(self) -> Iterator[Generation]:
        """The current generation, kept open (not closed by a reload) until the block ends."""
        gen = self._current
        with gen._lock:
            gen.users += 1
        try:
            yield gen
        finally:
            with gen._lock:
                gen.users -= 1
                close = gen.retired and gen.users == 0
            if close:
                _close_later(gen.kernel)

    def changed_on_disk(self) -> bool:
        """Whether the policy file or a pack moved since the last (attempted) load."""
        return watched_mtimes(self._policy_path, self._packs) != self._mtimes

    def reload(self) -> bool:
        """Build a new kernel and swap it in; True when the tool catalog changed.

        A policy or pack that fails to load keeps the current kernel and sets ``last_error``."""
        with self._swap:
            self._mtimes = watched_mtimes(self._policy_path, self._packs)
            old = self._current
            try:
                new = self._generation(self._factory(), old.number + 1)
            except ConfigError as exc:
                self.last_error = str(exc)
                log.error("reload_refused", reason=self.last_error, kept=self._current.number)
                return False
            except Exception as exc:  # the server survives any policy or pack
                self.last_error = f"{type(exc).__name__}: {str(exc)[:300]}"
                log.error("reload_failed", reason=self.last_error, kept=self._current.number)
                return False
            self._current = new
            self.last_error = None
            with old._lock:
                old.retired = True
                close = old.users == 0
            if close:
                _close_later(old.kernel)
            changed = new.catalog.fingerprint != old.catalog.fingerprint
            log.info("reloaded", generation=new.number, tools_changed=changed)
            return changed

    def close(self) -> None:
        """Close the current kernel (server shutdown)."""
        with self._swap:
            self._current.retired = True
            self._current.kernel.close()


def _close_later(kernel: Kernel) -> None:
    """Close a retired kernel off the event loop (it waits for its pool)."""
    threading.Thread(target=kernel.close, name="bastion-retire", daemon=True).start()
