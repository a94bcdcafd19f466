"""The mask check in front of aiohttp's frame reader, on bytes alone."""

from __future__ import annotations

import itertools
import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from neurelay.gateway.masking import MaskCheck


def frame(payload: bytes, *, masked: bool = True, opcode: int = 0x1) -> bytes:
    size = len(payload)
    bit = 0x80 if masked else 0
    if size < 126:
        header = bytes((0x80 | opcode, bit | size))
    elif size < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, bit | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, bit | 127, size)
    if not masked:
        return header + payload
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536])
def test_masked_frames_pass_whole_whatever_their_length(size):
    data = frame(b"x" * size) + frame(b"y")
    check = MaskCheck()
    assert check.feed(data) == data
    assert not check.violated


def test_masked_frames_pass_when_fed_a_byte_at_a_time():
    data = frame(b"a" * 300) + frame(b"b" * 70_000) + frame(b"", opcode=0x9)
    check = MaskCheck()
    passed = b"".join(check.feed(data[i : i + 1]) for i in range(len(data)))
    assert passed == data
    assert not check.violated


def test_an_unmasked_frame_is_a_violation_and_nothing_from_it_on_passes():
    good = frame(b'{"type":"ping"}')
    check = MaskCheck()
    passed = check.feed(good + frame(b"evil", masked=False) + good)
    assert passed == good
    assert check.violated
    assert check.feed(good) == b""


def test_an_unmasked_header_split_across_reads_is_held_back_then_refused():
    check = MaskCheck()
    bad = frame(b"z" * 200, masked=False)
    assert check.feed(bad[:1]) == b""
    assert not check.violated
    assert check.feed(bad[1:]) == b""
    assert check.violated


@given(
    sizes=st.lists(st.sampled_from([0, 1, 125, 126, 300, 65535, 65536]), min_size=1, max_size=6),
    bad_at=st.integers(min_value=0, max_value=6),
    cuts=st.lists(st.integers(min_value=0, max_value=200_000), max_size=8),
)
def test_whatever_the_chunking_exactly_the_frames_before_an_unmasked_one_pass(sizes, bad_at, cuts):
    frames = [frame(b"p" * size) for size in sizes]
    good = b"".join(frames[:bad_at])
    if bad_at < len(frames):
        frames.insert(bad_at, frame(b"evil", masked=False))
    data = b"".join(frames)
    check = MaskCheck()
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    passed = b"".join(check.feed(data[a:b]) for a, b in itertools.pairwise(bounds))
    assert passed == good
    assert check.violated is (bad_at < len(sizes))
