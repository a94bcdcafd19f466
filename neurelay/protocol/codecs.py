"""JSON and MessagePack codecs, chosen per connection by WebSocket subprotocol.

`neurelay.v1.json` travels in text frames, `neurelay.v1.msgpack` in binary
frames; both carry the same objects. Decoding maps every malformed input to
`ProtocolError(bad_request)`; payloads are held to JSON values (no binary or
extension types, no non-finite floats, string keys, bounded nesting) so a
message published in one format can be delivered in the other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

import msgpack
import orjson

from neurelay.errors import ProtocolError
from neurelay.protocol.codes import ErrorCode

JSON_SUBPROTOCOL: Final = "neurelay.v1.json"
MSGPACK_SUBPROTOCOL: Final = "neurelay.v1.msgpack"
MAX_NESTING: Final = 32


class Codec:
    """Encodes and decodes frame objects for one subprotocol."""

    __slots__ = ("binary", "subprotocol")

    def __init__(self, subprotocol: str, *, binary: bool) -> None:
        self.subprotocol = subprotocol
        self.binary = binary

    def encode(self, frame: Mapping[str, Any]) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes | str) -> Any:
        raise NotImplementedError


class JsonCodec(Codec):
    def __init__(self) -> None:
        super().__init__(JSON_SUBPROTOCOL, binary=False)

    def encode(self, frame: Mapping[str, Any]) -> bytes:
        return orjson.dumps(frame)

    def decode(self, data: bytes | str) -> Any:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"invalid JSON: {e}") from e


class MsgpackCodec(Codec):
    def __init__(self) -> None:
        super().__init__(MSGPACK_SUBPROTOCOL, binary=True)

    def encode(self, frame: Mapping[str, Any]) -> bytes:
        packed: bytes = msgpack.packb(frame, use_bin_type=True)
        return packed

    def decode(self, data: bytes | str) -> Any:
        if isinstance(data, str):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "MessagePack frames must be binary")
        try:
            return msgpack.unpackb(data, raw=False, strict_map_key=True)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"invalid MessagePack: {e}") from e


JSON: Final = JsonCodec()
MSGPACK: Final = MsgpackCodec()
CODECS: Final[Mapping[str, Codec]] = {c.subprotocol: c for c in (JSON, MSGPACK)}


def check_json_value(value: object, depth: int = 0) -> None:
    """Raise `ProtocolError(bad_request)` unless `value` is a JSON value nested at most 32 deep."""
    if depth > MAX_NESTING:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"payload is nested deeper than {MAX_NESTING}")
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "payload numbers must be finite")
        return
    if isinstance(value, list):
        for item in value:
            check_json_value(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ProtocolError(ErrorCode.BAD_REQUEST, "payload object keys must be strings")
            check_json_value(item, depth + 1)
        return
    raise ProtocolError(
        ErrorCode.BAD_REQUEST, f"payload holds a {type(value).__name__}, not a JSON value"
    )
