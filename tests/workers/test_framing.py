"""The kernel <-> worker framing: what goes in comes out; a malformed frame is refused."""

from __future__ import annotations

import os
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.sandbox.workers.framing import (
    MAX_HEADER,
    FrameError,
    FrameReader,
    encode_frame,
    read_frame_blocking,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)


def _pipe_with(data: bytes) -> int:
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    return r


@given(payload=json_values, blob=st.binary(max_size=2000))
def test_round_trip(payload: Any, blob: bytes) -> None:
    frame = encode_frame({"t": "x", "v": payload}, blob)
    r = _pipe_with(frame + frame)
    try:
        first = read_frame_blocking(r)
        second = FrameReader(r).read(1.0)
    finally:
        os.close(r)
    assert first.kind == "x" and first.header["v"] == payload and first.blob == blob
    assert second is not None and second.header == first.header and second.blob == blob


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (struct.pack(">II", MAX_HEADER + 1, 0), "header of"),
        (struct.pack(">II", 2, 2**31), "blob of"),
        (struct.pack(">II", 2, 0) + b"\xff\xfe", "UTF-8 JSON"),
        (struct.pack(">II", 2, 0) + b"[]", "JSON object"),
        (struct.pack(">II", 8, 0) + b'{"t": 1}', "JSON object"),
    ],
)
def test_malformed_frames_are_refused(data: bytes, why: str) -> None:
    r = _pipe_with(data)
    try:
        with pytest.raises(FrameError, match=why):
            FrameReader(r).read(1.0)
    finally:
        os.close(r)


def test_closed_peer_is_eof_and_silence_is_none() -> None:
    r, w = os.pipe()
    try:
        assert FrameReader(r).read(0.05) is None
        os.close(w)
        with pytest.raises(EOFError):
            FrameReader(r).read(1.0)
    finally:
        os.close(r)
