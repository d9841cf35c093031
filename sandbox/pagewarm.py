"""Pre-faulting the runner's memory slot: the pages recent calls wrote, in one system call.

Place in the pipeline: a worker answers a Python call, then drops its store, and the pooling
allocator resets the instance's memory slot for the next one. Resetting in place (wasmtime's
``keep_resident``) copies the runner's whole ~21 MiB memory image back on every drop (~1.5 ms
here); releasing the slot (``madvise``) costs ~0.15 ms, but the next instance and call then
take ~500 copy-on-write page faults (~1 ms). A ``PageWarmer`` keeps the cheap release and takes
those faults ahead of time, in batch: after a call it reads which pages of the slot became
private (``/proc/self/pagemap``), and after each reset it populates exactly those pages
writable (``process_madvise(MADV_POPULATE_WRITE)``, one system call for all of them) and maps
again the image pages calls only read (``MADV_POPULATE_READ``), before the next instance is
made. A populated page looks written at the next reading, so readings are
taken only after a *clean* call, one whose slot was not populated: the first call, and one call
in every ``RESCAN_EVERY`` (that call takes its faults, ~1 ms, and the set follows the skills
the worker now serves instead of only growing).

Populating changes no byte of memory: each page gets the image's content (or zeros) exactly as
the fault would have given it, after wasmtime's reset, so nothing of one call reaches the next.
It is an optimisation only: every failure (an older kernel, a slot that moved) is ignored, and
``supported()`` probes the whole mechanism once before the engine is configured to rely on it.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
import threading
from pathlib import Path
from typing import Final

__all__ = ["MAX_PAGES", "RESCAN_EVERY", "PageWarmer", "supported"]

RESCAN_EVERY: Final[int] = 32
"""Calls between two clean readings of the slot's pages (the set kept is the union of the last
two): often enough to follow the skills a worker serves, rare enough that the un-populated call
and the reading (~1 ms together) cost ~0.03 ms per call."""
MAX_PAGES: Final[int] = 4096
"""At most this many pages (16 MiB) are populated per call: past it a call's working set is
better left to faults than copied in full every time."""
_MAX_REGION: Final[int] = 64 * 1024 * 1024
"""The part of a slot read from the page map, around the runner's memory image."""
_PAGE: Final[int] = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_MADV_POPULATE_READ: Final[int] = 22
_MADV_POPULATE_WRITE: Final[int] = 23
_MAX_READ_PAGES: Final[int] = 16384
"""At most this many pages (64 MiB) the calls only read are mapped again per call (no copy:
the image's page-cache pages, mapped read-only, as the read fault would map them)."""
_NR_PROCESS_MADVISE: Final[dict[str, int]] = {"x86_64": 440, "aarch64": 440}
_UIO_MAXIOV: Final[int] = 1024
_PRIVATE: Final[bytes] = bytes(1 if (b & 0xA0) == 0x80 else 0 for b in range(256))
"""Top byte of a page-map entry -> 1 for a present page that is not file-backed (bit 63 set,
bit 61 clear): a page the instance wrote (copy-on-write broken) or a zero page it touched."""
_MAPPED: Final[bytes] = bytes(1 if (b & 0xA0) == 0xA0 else 0 for b in range(256))
"""Top byte of a page-map entry -> 1 for a present file-backed page: an image page only read
(mapped from the page cache by a read fault and the kernel's fault-around)."""
_RUN: Final[re.Pattern[bytes]] = re.compile(rb"\x01+")


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


_libc: ctypes.CDLL | None = None
_probed: bool | None = None
_probe_lock = threading.Lock()


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.syscall.restype = ctypes.c_long
        lib.mmap.restype = ctypes.c_void_p
        lib.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                             ctypes.c_int, ctypes.c_long)  # fmt: skip
        lib.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        _libc = lib
    return _libc


def _populate(pidfd: int, iov: ctypes.Array[_IoVec], advice: int = _MADV_POPULATE_WRITE) -> bool:
    """``advice`` (``MADV_POPULATE_WRITE`` or ``_READ``) over every range of ``iov`` (1024
    ranges per system call)."""
    lib, nr = _lib(), _NR_PROCESS_MADVISE[os.uname().machine]
    base = ctypes.addressof(iov)
    size = ctypes.sizeof(_IoVec)
    for start in range(0, len(iov), _UIO_MAXIOV):
        count = min(_UIO_MAXIOV, len(iov) - start)
        ptr = ctypes.c_void_p(base + start * size)
        # every argument register-wide: syscall(2) is variadic and reads each one as a long
        args = (ctypes.c_long(nr), ctypes.c_long(pidfd), ptr, ctypes.c_size_t(count))
        if lib.syscall(*args, ctypes.c_long(advice), ctypes.c_long(0)) < 0:
            return False
    return True


def _probe() -> bool:
    """The whole mechanism on two pages of our own: populate them, then read them back from
    the page map as present and private."""
    if sys.platform != "linux" or os.uname().machine not in _NR_PROCESS_MADVISE:
        return False
    if not hasattr(os, "pidfd_open"):
        return False
    lib = _lib()
    size = 2 * _PAGE
    addr = lib.mmap(None, size, 0x3, 0x22, -1, 0)  # PROT_READ|WRITE, MAP_PRIVATE|ANONYMOUS
    if addr in (None, ctypes.c_void_p(-1).value):
        return False
    try:
        pidfd = os.pidfd_open(os.getpid())
        try:
            iov = (_IoVec * 1)(_IoVec(addr, size))
            if not _populate(pidfd, iov):
                return False
        finally:
            os.close(pidfd)
        fd = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        try:
            top = os.pread(fd, 16, (addr // _PAGE) * 8)[7::8].translate(_PRIVATE)
        finally:
            os.close(fd)
        return top == b"\x01\x01"
    except OSError:
        return False
    finally:
        lib.munmap(addr, size)


def supported() -> bool:
    """True if this process can read its page map and populate pages with one system call."""
    global _probed
    with _probe_lock:
        if _probed is None:
            _probed = _probe()
        return _probed


_Region = tuple[int, int]
"""``(lo, hi)``: the readable part of a slot, around its memory image."""


def _anonymous_rw(row: tuple[int, int, bytes, int]) -> bool:
    return row[2] == b"rw-p" and not row[3]


def _parse_maps(text: bytes, inode: int) -> list[_Region]:
    """Each writable mapping of the file ``inode`` (a memory image), widened over the writable
    anonymous mappings right before and after it (the slot's stack and heap)."""
    rows: list[tuple[int, int, bytes, int]] = []
    for line in text.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 5:
            continue
        lo_s, _, hi_s = fields[0].partition(b"-")
        try:
            rows.append((int(lo_s, 16), int(hi_s, 16), fields[1], int(fields[4])))
        except ValueError:
            continue
    out = []
    for i, (lo, hi, perms, ino) in enumerate(rows):
        if ino != inode or perms != b"rw-p":
            continue
        start, end, j = lo, hi, i
        while (
            j > 0 and rows[j - 1][1] == start and rows[j - 1][2] == b"rw-p" and not rows[j - 1][3]
        ):
            j -= 1
            start = rows[j][0]
        j = i
        while (
            j + 1 < len(rows)
            and rows[j + 1][0] == end
            and rows[j + 1][2] == b"rw-p"
            and not rows[j + 1][3]
        ):
            j += 1
            end = rows[j][1]
        start = max(start, lo - _MAX_REGION // 2)
        out.append((start, min(end, start + _MAX_REGION)))
    return out


class PageWarmer:
    """Learns the pages calls write in the runner's slot and populates them after each reset.

    ``learn()`` runs after a call and before its store is dropped; ``warm()`` after the drop.
    A slot found empty (the image not mapped from the file, or moved) leaves the next call
    clean, so it is looked for again.
    One warmer per executor; calls in a worker are sequential (a lock guards the rest).
    """

    def __init__(self, artifact: Path, keep_resident: int) -> None:
        self._inode = os.stat(artifact).st_ino
        self._skip = keep_resident // _PAGE
        """Pages at the start of the slot that the allocator keeps resident: never populated."""
        self._maps = os.open("/proc/self/maps", os.O_RDONLY | os.O_CLOEXEC)
        self._pagemap = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        self._pidfd = os.pidfd_open(os.getpid())
        self._lock = threading.Lock()
        self._calls = 0
        self._clean = True
        """No page was populated into the slot before the call now running."""
        self._region: _Region | None = None
        self._last: frozenset[int] = frozenset()
        self._iov: ctypes.Array[_IoVec] | None = None
        self._read_iov: ctypes.Array[_IoVec] | None = None
        """The image pages the clean call only read, mapped again read-only after the reset."""
        self.populated = 0
        """Pages populated per warm at the last reading (for metrics and tests)."""

    @classmethod
    def open(cls, artifact: Path, keep_resident: int) -> PageWarmer | None:
        """A warmer for the memory image mapped from ``artifact``; None if unsupported."""
        if not supported():
            return None
        try:
            return cls(artifact, keep_resident)
        except OSError:
            return None

    def _read_maps(self) -> bytes:
        chunks = []
        os.lseek(self._maps, 0, os.SEEK_SET)
        while chunk := os.read(self._maps, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)

    def _pages(self, region: _Region, table: bytes) -> set[int]:
        """Pages of ``region`` (index from its start) whose page-map entry ``table`` selects."""
        lo, hi = region
        n = (hi - lo) // _PAGE
        top = os.pread(self._pagemap, n * 8, (lo // _PAGE) * 8)[7::8].translate(table)
        pages: set[int] = set()
        for m in _RUN.finditer(top, self._skip):
            pages.update(range(m.start(), m.end()))
        return pages

    def _written(self, region: _Region) -> set[int]:
        """Pages of ``region`` that are private now: after a call that ran in a slot nothing
        was populated into, exactly the pages it (or its instance's start) wrote."""
        return self._pages(region, _PRIVATE)

    def _scan(self) -> tuple[_Region, set[int]] | None:
        """The slot holding the runner's instance now and the pages the call wrote."""
        region = self._region
        if region is not None:
            pages = self._written(region)
            if pages:
                return region, pages
        best: tuple[_Region, set[int]] | None = None
        for found in _parse_maps(self._read_maps(), self._inode):
            pages = self._written(found)
            if pages and (best is None or len(pages) > len(best[1])):
                best = found, pages
        return best

    def learn(self) -> None:
        """After a call, before its drop: after a clean call, read the pages it wrote; the
        set kept is this reading's and the previous one's."""
        with self._lock:
            self._calls += 1
            if not self._clean:
                return
            self._clean = False
            try:
                found = self._scan()
            except OSError:
                found = None
            if found is None:
                self._region, self._last, self._iov, self.populated = None, frozenset(), None, 0
                self._read_iov = None
                return
            region, pages = found
            union = pages | self._last if region == self._region else pages
            self._region, self._last = region, frozenset(pages)
            chosen = sorted(union)[:MAX_PAGES]
            self._iov = self._ranges(region[0], chosen)
            self.populated = len(chosen)
            try:
                read = sorted(self._pages(region, _MAPPED) - union)[:_MAX_READ_PAGES]
            except OSError:
                read = []
            self._read_iov = self._ranges(region[0], read) if read else None

    @staticmethod
    def _ranges(lo: int, pages: list[int]) -> ctypes.Array[_IoVec]:
        runs: list[list[int]] = []
        for p in pages:
            if runs and runs[-1][1] == p:
                runs[-1][1] = p + 1
            else:
                runs.append([p, p + 1])
        return (_IoVec * len(runs))(*(_IoVec(lo + s * _PAGE, (e - s) * _PAGE) for s, e in runs))

    def warm(self) -> None:
        """After the drop: populate the learned pages in the slot (ignored if they moved),
        except before every ``RESCAN_EVERY``-th call, which runs clean to be read."""
        with self._lock:
            if self._calls % RESCAN_EVERY == 0 or self._iov is None:
                self._clean = True
                return
            if len(self._iov) and not _populate(self._pidfd, self._iov):
                self._iov, self._region, self.populated, self._read_iov = None, None, 0, None
                self._clean = True
                return
            read = self._read_iov
            if read is not None and not _populate(self._pidfd, read, _MADV_POPULATE_READ):
                self._read_iov = None  # the written pages still go in

    def close(self) -> None:
        """Close the warmer's descriptors (idempotent)."""
        with self._lock:
            for name in ("_maps", "_pagemap", "_pidfd"):
                fd = getattr(self, name)
                if fd >= 0:
                    os.close(fd)
                    setattr(self, name, -1)
            self._iov = self._read_iov = None
