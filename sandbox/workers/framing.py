"""Frames on the kernel <-> worker socket: a JSON header and an optional raw byte blob.

Wire format of one frame: ``>II`` (header length, blob length), the header as UTF-8 JSON
(always an object with a ``"t"`` type key), then the blob (skill input or output bytes, sent
as they are, never base64). Nothing is pickled: a compromised worker can send only JSON and
bytes, and both sizes are checked against caps before anything is read or parsed.
"""

from __future__ import annotations

import ctypes
import errno
import json
import math
import os
import select
import struct
import time
from dataclasses import dataclass
from typing import Any, Final

from .gilheld import MSG_DONTWAIT, libc

__all__ = [
    "MAX_BLOB",
    "MAX_HEADER",
    "Frame",
    "FrameError",
    "FrameReader",
    "FrameStream",
    "encode_frame",
    "read_frame_blocking",
]

_LEN: Final = struct.Struct(">II")
MAX_HEADER: Final[int] = 4 * 1024 * 1024
"""Largest JSON header accepted (log lines, audit records and error details are bounded)."""
_CHUNK: Final[int] = 256 * 1024
_SMALL: Final[int] = 64 * 1024
"""``FrameStream``'s read size for frames that fit (below malloc's mmap threshold)."""
MAX_BLOB: Final[int] = 64 * 1024 * 1024
"""Largest blob accepted (inputs and outputs are capped well below this by the limits)."""
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
"""One encoder for every frame (``json.dumps`` with these options builds a new one each time)."""


class FrameError(Exception):
    """The peer sent something that is not a well-formed frame (sizes, UTF-8, JSON object)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame: ``kind`` is the header's ``"t"``; ``blob`` the raw bytes."""

    kind: str
    header: dict[str, Any]
    blob: bytes = b""


def encode_frame(header: dict[str, Any], blob: bytes = b"") -> bytes:
    """The bytes of one frame (``header`` must hold a ``"t"`` key)."""
    head = _ENCODER.encode(header).encode("utf-8")
    return b"".join((_LEN.pack(len(head), len(blob)), head, blob))


def _decode(head: bytes | bytearray, blob: bytes) -> Frame:
    try:
        header = json.loads(head.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FrameError(f"frame header is not UTF-8 JSON: {str(exc)[:100]}") from None
    if not isinstance(header, dict) or not isinstance(header.get("t"), str):
        raise FrameError('frame header is not a JSON object with a string "t"')
    return Frame(header["t"], header, blob)


def _sizes(prefix: bytes | bytearray, max_blob: int) -> tuple[int, int]:
    """The header and blob sizes the prefix at the start of ``prefix`` gives, checked."""
    hlen, blen = _LEN.unpack_from(prefix)
    if hlen > MAX_HEADER:
        raise FrameError(f"frame header of {hlen} bytes exceeds {MAX_HEADER}")
    if blen > max_blob:
        raise FrameError(f"frame blob of {blen} bytes exceeds {max_blob}")
    return hlen, blen


class FrameReader:
    """Reads frames from a non-blocking-safe fd with a timeout (the kernel's side)."""

    def __init__(self, fd: int, *, max_blob: int = MAX_BLOB) -> None:
        self._fd = fd
        self._buf = bytearray()
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        self.max_blob = max_blob
        self._chunk = ctypes.create_string_buffer(_CHUNK) if libc is not None else None

    def _take(self) -> Frame | None:
        return _take_from(self._buf, self.max_blob)

    def _fill(self) -> None:
        """Append what is queued on the descriptor (poll said readable). On a socket this is
        ``recv(MSG_DONTWAIT)`` keeping the GIL (``gilheld``: the poll was this wait's one
        release); on anything else, ``os.read``. Raises ``EOFError`` at end of stream."""
        lib, buf = libc, self._chunk
        if lib is not None and buf is not None:
            n = lib.recv(self._fd, buf, len(buf), MSG_DONTWAIT)
            if n > 0:
                self._buf += memoryview(buf)[:n]
                return
            if n == 0:
                raise EOFError("the peer closed the connection")
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EINTR):
                return
            if err != errno.ENOTSOCK:
                raise OSError(err, os.strerror(err))
            self._chunk = None  # a pipe (tests): plain reads from now on
        chunk = os.read(self._fd, 1 << 20)
        if not chunk:
            raise EOFError("the peer closed the connection")
        self._buf += chunk

    def read_now(self) -> Frame | None:
        """A frame that has already arrived, without waiting (and, on a socket, without
        releasing the GIL); else None. Raises like ``read``."""
        frame = self._take()
        if frame is not None or self._chunk is None:
            return frame if frame is not None else self.read(0.0)
        self._fill()
        return self._take()

    def read(self, timeout_s: float) -> Frame | None:
        """The next frame, or ``None`` if none completed within ``timeout_s``.

        Raises ``EOFError`` when the peer closed (or died), ``FrameError`` on a bad frame.
        """
        frame = self._take()
        if frame is not None:
            return frame
        end = time.monotonic() + max(timeout_s, 0.0)
        while True:
            # Past the end, one look without waiting (what already arrived is read), no more.
            left = end - time.monotonic()
            if not self._poll.poll(max(math.ceil(left * 1000), 0)):
                if time.monotonic() >= end:
                    return None
                continue
            self._fill()
            frame = self._take()
            if frame is not None:
                return frame
            if left <= 0:
                return None


def _take_from(buf: bytearray, max_blob: int) -> Frame | None:
    """The first whole frame in ``buf``, removed from it; None while it is incomplete. The
    sizes are checked as soon as the prefix is in, before anything more is read."""
    if len(buf) < _LEN.size:
        return None
    hlen, blen = _sizes(buf, max_blob)
    end = _LEN.size + hlen + blen
    if len(buf) < end:
        return None
    head = buf[_LEN.size : _LEN.size + hlen]
    blob = bytes(buf[_LEN.size + hlen : end]) if blen else b""
    del buf[:end]
    return _decode(head, blob)


class FrameStream:
    """Blocking reads of whole frames (the worker's call loop): one ``read`` takes what has
    arrived (into one reused buffer), so a call frame costs one system call, not three; bytes
    past a frame stay for the next. Only for a reader that owns the stream from then on:
    before it, ``read_frame_blocking`` reads exactly one frame and nothing more."""

    def __init__(self, fd: int, *, max_blob: int = MAX_BLOB) -> None:
        self._fd = fd
        self._buf = bytearray()
        self._scratch = bytearray(_SMALL)
        self._view = memoryview(self._scratch)
        self.max_blob = max_blob

    def read(self) -> Frame:
        """The next frame, waiting as long as it takes. Raises ``EOFError``, ``FrameError``."""
        buf = self._buf
        while True:
            frame = _take_from(buf, self.max_blob)
            if frame is not None:
                return frame
            want = _LEN.size - len(buf)
            if want <= 0:
                hlen, blen = _sizes(buf, self.max_blob)
                want = _LEN.size + hlen + blen - len(buf)
            if want <= _SMALL:
                n = os.readv(self._fd, [self._view])
                chunk: bytes | memoryview = self._view[:n]
            else:
                chunk = os.read(self._fd, min(want, 1 << 20))
                n = len(chunk)
            if not n:
                raise EOFError("the peer closed the connection")
            buf += chunk


def _read_exact(fd: int, n: int) -> bytes:
    parts: list[bytes] = []
    while n > 0:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError("the peer closed the connection")
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def read_frame_blocking(fd: int, *, max_blob: int = MAX_BLOB) -> Frame:
    """Block until one whole frame has arrived (the worker's side). Raises ``EOFError``."""
    hlen, blen = _sizes(_read_exact(fd, _LEN.size), max_blob)
    head = _read_exact(fd, hlen)
    blob = _read_exact(fd, blen) if blen else b""
    return _decode(head, blob)
