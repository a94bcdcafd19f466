"""Server-side WebSocket framing used by the direct write path (RFC 6455, section 5.2)."""

from __future__ import annotations

import struct

import pytest

from neurelay.gateway.outbox import websocket_frame


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
