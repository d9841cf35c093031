"""The call's path through the pipe, piece by piece: the worker's buffered frame reads, the
request it rebuilds, and the log level the kernel tells it."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import struct
import threading
from pathlib import Path
from typing import Any

import pytest
import structlog

from bastion.executor import Capabilities, ExecutionRequest, Limits, Mount
from bastion.netrule import NetRule
from bastion.sandbox.workers.framing import (
    MAX_BLOB,
    FrameError,
    FrameStream,
    encode_frame,
)
from bastion.sandbox.workers.pool import call_log_level
from bastion.sandbox.workers.wire import encode_call, request_from_call

FRAMES = [
    encode_frame({"t": "call", "id": 1, "v": "é" * 40}, b'{"name": "w"}'),
    encode_frame({"t": "idle", "id": 1}),
    encode_frame({"t": "call", "id": 2}, os.urandom(200_000)),  # past the small read size
    encode_frame({"t": "prepare", "runtime": "python", "entry": "/x/skill.py"}),
]


def _write_in_pieces(sock: socket.socket, data: bytes, step: int) -> threading.Thread:
    def run() -> None:
        for i in range(0, len(data), step):
            sock.sendall(data[i : i + step])
        sock.close()

    t = threading.Thread(target=run)
    t.start()
    return t


@pytest.mark.parametrize("step", [1, 7, 4096, 10**7])
def test_frame_stream_reads_frames_however_the_bytes_arrive(step: int) -> None:
    ours, theirs = socket.socketpair()
    data = b"".join(FRAMES[:2]) if step == 1 else b"".join(FRAMES)  # byte by byte: small ones
    writer = _write_in_pieces(theirs, data, step)
    stream = FrameStream(ours.fileno())
    try:
        got = []
        for want in FRAMES[: 2 if step == 1 else len(FRAMES)]:
            frame = stream.read()
            got.append(encode_frame(frame.header, frame.blob))
            assert got[-1] == want
        with pytest.raises(EOFError):
            stream.read()
    finally:
        writer.join()
        ours.close()


def test_frame_stream_checks_sizes_before_waiting_for_the_rest() -> None:
    ours, theirs = socket.socketpair()
    try:
        # Only the prefix of a frame whose blob is over the cap: refused at once, not read.
        theirs.sendall(struct.pack(">II", 2, MAX_BLOB + 1))
        with pytest.raises(FrameError, match="blob of"):
            FrameStream(ours.fileno()).read()
    finally:
        ours.close()
        theirs.close()


def test_frame_stream_refuses_a_bad_header_and_a_cut_frame() -> None:
    r, w = os.pipe()
    os.write(w, struct.pack(">II", 2, 0) + b"[]")
    with pytest.raises(FrameError, match="JSON object"):
        FrameStream(r).read()
    os.write(w, FRAMES[0][:-3])  # a frame cut short by the peer closing
    os.close(w)
    try:
        with pytest.raises(EOFError):
            FrameStream(r).read()
    finally:
        os.close(r)


def _request(caps: Capabilities, folder: Path) -> ExecutionRequest:
    return ExecutionRequest(
        skill="hello",
        version="1.0.0",
        runtime="python",
        entry=folder / "skill.py",
        folder=folder,
        input={"name": "w"},
        input_json='{"name": "w"}',
        caps=caps,
        limits=Limits(timeout_ms=1234, memory_mb=64, output_kb=32),
        deadline=42.5,
        invocation_id="inv-1",
        logger=None,
        audit=lambda *_a: None,
    )


def _rebuilt(request: ExecutionRequest) -> ExecutionRequest:
    header = encode_call(7, request, request.deadline)
    return request_from_call(header, request.input_json, logger="log", audit="audit")


@pytest.mark.parametrize(
    "caps",
    [
        Capabilities(),
        Capabilities(secrets={"TOKEN": "s3cr3t"}),
        Capabilities(config={"depth": 3, "mode": ["a", "b"]}),
        Capabilities(
            network=(NetRule("https", "api.example.com", 443, False, "https://api.example.com"),),
            private_allow=(ipaddress.ip_network("10.0.0.0/8"),),
            mounts=(Mount("/data", Path("/srv/data"), True),),
        ),
    ],
    ids=["none", "secrets", "config", "network+mounts"],
)
def test_the_worker_rebuilds_exactly_the_granted_request(
    caps: Capabilities, tmp_path: Path
) -> None:
    request = _request(caps, tmp_path)
    got = _rebuilt(request)
    assert got.caps == caps
    assert (got.entry, got.folder) == (request.entry, request.folder)
    assert got.limits == request.limits
    assert (got.skill, got.version, got.runtime) == ("hello", "1.0.0", "python")
    assert (got.deadline, got.invocation_id, got.input_json) == (42.5, "inv-1", '{"name": "w"}')
    assert (got.logger, got.audit) == ("log", "audit")


def test_a_call_without_grants_gets_its_own_empty_grant(tmp_path: Path) -> None:
    first, second = (
        _rebuilt(_request(Capabilities(), tmp_path)),
        _rebuilt(_request(Capabilities(), tmp_path)),
    )
    assert first.caps == second.caps == Capabilities()
    assert first.caps.secrets is not second.caps.secrets  # nothing a call could change is shared


@pytest.mark.parametrize(
    "level", [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL]
)
def test_call_log_level_is_the_lowest_level_the_logger_writes(level: int) -> None:
    logger = structlog.wrap_logger(
        structlog.PrintLogger(), wrapper_class=structlog.make_filtering_bound_logger(level)
    )
    assert call_log_level(logger) == level


class _Odd:
    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def is_enabled_for(self, _level: int) -> Any:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.mark.parametrize(
    "logger", [object(), _Odd(1), _Odd(None), _Odd(RuntimeError("foreign code"))]
)
def test_call_log_level_of_an_unknown_logger_is_everything(logger: Any) -> None:
    assert call_log_level(logger) == logging.DEBUG
