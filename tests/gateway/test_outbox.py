"""Server-side WebSocket framing used by the direct write path (RFC 6455, section 5.2)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from neurelay.gateway.outbox import batches, websocket_frame


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (0, bytes((0x81, 0))),
        (125, bytes((0x81, 125))),
        (126, struct.pack("!BBH", 0x81, 126, 126)),
        (65535, struct.pack("!BBH", 0x81, 126, 65535)),
        (65536, struct.pack("!BBQ", 0x81, 127, 65536)),
    ],
)
def test_text_frames_use_the_shortest_length_encoding(size: int, header: bytes):
    payload = b"x" * size
    assert websocket_frame(payload, binary=False) == header + payload


def test_binary_frames_have_the_binary_opcode_and_are_never_masked():
    frame = websocket_frame(b"\x01\x02", binary=True)
    assert frame[0] == 0x82  # FIN + binary
    assert frame[1] & 0x80 == 0  # servers do not mask


@given(
    payloads=st.lists(st.binary(min_size=1, max_size=300), max_size=40),
    separator=st.sampled_from([b"", b"\n"]),
    limit=st.integers(min_value=1, max_value=1000),
)
def test_batches_keep_every_payload_once_in_order_and_fill_each_frame_to_the_limit(
    payloads: list[bytes], separator: bytes, limit: int
):
    runs = list(batches(payloads, separator, limit))
    # Each run is the next slice of payloads, joined (payloads are not empty, so the slice
    # is the shortest one whose join is the run).
    groups, rest = [], list(payloads)
    for run in runs:
        taken = next(n for n in range(1, len(rest) + 1) if separator.join(rest[:n]) == run)
        groups.append(rest[:taken])
        rest = rest[taken:]
    assert rest == []
    assert [p for group in groups for p in group] == payloads
    for n, group in enumerate(groups):
        joined = separator.join(group)
        assert len(group) == 1 or len(joined) <= limit  # only a lone payload may be larger
        if n + 1 < len(groups):  # full: the next payload would not have fitted
            assert len(joined) + len(separator) + len(groups[n + 1][0]) > limit


def test_batches_split_where_the_next_payload_would_pass_the_limit():
    runs = list(batches([b"aaaa", b"bbbb", b"cc", b"d" * 20, b"e"], b"\n", 10))
    assert runs == [b"aaaa\nbbbb", b"cc", b"d" * 20, b"e"]
