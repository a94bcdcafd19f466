"""The `+batch` subprotocols: several messages in one server frame, each read back once."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from neurelay.errors import ProtocolError
from neurelay.protocol.codecs import JSON, JSON_BATCH, MSGPACK, MSGPACK_BATCH, Codec
from neurelay.protocol.codes import ErrorCode
from tests.protocol.test_codecs import JSON_VALUES

FRAMES = st.lists(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4), min_size=1)


@given(JSON_VALUES)
def test_an_encoded_json_text_never_holds_a_raw_newline(value: Any) -> None:
    assert b"\n" not in JSON.encode({"payload": value})


@pytest.mark.parametrize("codec", [JSON_BATCH, MSGPACK_BATCH], ids=lambda c: c.subprotocol)
@given(objects=FRAMES)
def test_joined_messages_decode_to_the_same_objects_in_order(
    codec: Codec, objects: list[dict[str, Any]]
) -> None:
    frame = codec.separator.join(codec.encode(o) for o in objects)
    decoded = codec.decode_batch(frame if codec.binary else frame.decode())
    assert decoded == objects


@pytest.mark.parametrize("codec", [JSON_BATCH, MSGPACK_BATCH], ids=lambda c: c.subprotocol)
def test_batched_codecs_encode_like_their_base(codec: Codec) -> None:
    base = MSGPACK if codec.binary else JSON
    frame = {"type": "message", "channel": "agent:1", "payload": [1, "é"], "seq": 3}
    assert codec.encode(frame) == base.encode(frame)
    assert codec.decode(base.encode(frame)) == frame


@pytest.mark.parametrize("codec", [JSON, MSGPACK], ids=lambda c: c.subprotocol)
def test_unbatched_codecs_read_one_object_per_frame(codec: Codec) -> None:
    assert codec.decode_batch(codec.encode({"type": "pong"})) == [{"type": "pong"}]
    with pytest.raises(ProtocolError):
        codec.decode_batch(codec.encode({"a": 1}) + b"\n" + codec.encode({"b": 2}))


@pytest.mark.parametrize(
    ("codec", "data"),
    [
        (JSON_BATCH, b""),
        (JSON_BATCH, b'{"a":1}\n'),  # an empty line is no message
        (JSON_BATCH, b'{"a":1}\n{"b":'),
        (MSGPACK_BATCH, b""),
        (MSGPACK_BATCH, msgpack.packb({"a": 1}) + msgpack.packb([1, 2, 3])[:-1]),
        (MSGPACK_BATCH, msgpack.packb({"a": 1}) + b"\xc1"),
        (MSGPACK_BATCH, "text"),
    ],
)
def test_a_malformed_batch_is_a_bad_request(codec: Codec, data: bytes | str) -> None:
    with pytest.raises(ProtocolError) as raised:
        codec.decode_batch(data)
    assert raised.value.code is ErrorCode.BAD_REQUEST
