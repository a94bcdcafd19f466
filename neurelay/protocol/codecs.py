"""JSON and MessagePack codecs, chosen per connection by WebSocket subprotocol.

`neurelay.v1.json` travels in text frames, `neurelay.v1.msgpack` in binary
frames; both carry the same objects. Their `+batch` variants
(`neurelay.v1.json+batch`, `neurelay.v1.msgpack+batch`) let one server frame
carry several messages: JSON texts separated by newlines (an encoded JSON
text never holds a raw newline), or MessagePack objects back to back (each is
self-delimiting); clients still send one frame per message. Decoding maps
every malformed input to `ProtocolError(bad_request)`; payloads are held to
JSON values (no binary or extension types, no non-finite floats, string
keys, bounded nesting) so a message published in one format can be
delivered in the other. Integers must fit in 64 bits (from -2^63 to 2^64-1,
what both formats carry exactly): a longer integer in JSON is refused rather
than silently read as a float, and MessagePack has no longer integers at all.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Final

import msgpack
import orjson

from neurelay.errors import ProtocolError
from neurelay.protocol.codes import ErrorCode

JSON_SUBPROTOCOL: Final = "neurelay.v1.json"
MSGPACK_SUBPROTOCOL: Final = "neurelay.v1.msgpack"
JSON_BATCH_SUBPROTOCOL: Final = "neurelay.v1.json+batch"
MSGPACK_BATCH_SUBPROTOCOL: Final = "neurelay.v1.msgpack+batch"
MAX_NESTING: Final = 32
# A server frame of a `+batch` subprotocol holds several messages only up to this many bytes
# in all (a larger message travels alone): clients read a frame whole before handling it.
BATCH_FRAME_BYTES: Final = 64 * 1024
MIN_INTEGER: Final = -(2**63)
MAX_INTEGER: Final = 2**64 - 1
# orjson reads an integer literal beyond 64 bits as a float. Such a literal has at least
# 19 digits in a row (2^63 has 19), so only a text holding such a run takes a closer look.
_LONG_RUN = re.compile(rb"[0-9]{19,}")
_LONG_RUN_TEXT = re.compile(r"[0-9]{19,}")
_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_INTEGER_BEFORE = (b".", b"e", b"E", b"+")  # a fraction or an exponent
_NOT_INTEGER_AFTER = (b".", b"e", b"E")  # the integer part of a float
_LIMITS = {False: str(MAX_INTEGER).encode(), True: str(-MIN_INTEGER).encode()}


def _msgpack_header(count: int, fixed: int, sixteen: int) -> bytes:
    """A MessagePack map (0x80, 0xde) or array (0x90, 0xdc) header for `count` items."""
    if count < 16:
        return bytes([fixed | count])
    if count < 2**16:
        return bytes([sixteen]) + count.to_bytes(2, "big")
    return bytes([sixteen + 1]) + count.to_bytes(4, "big")


class Codec:
    """Encodes and decodes frame objects for one subprotocol."""

    __slots__ = ("batched", "binary", "separator", "subprotocol")

    def __init__(self, subprotocol: str, *, binary: bool, batched: bool, separator: bytes) -> None:
        self.subprotocol = subprotocol
        self.binary = binary
        # Whether server frames may carry several encoded messages, joined by `separator`.
        self.batched = batched
        self.separator = separator

    def encode(self, frame: Mapping[str, Any]) -> bytes:
        raise NotImplementedError

    def encode_with_list(self, frame: Mapping[str, Any], field: str, items: list[bytes]) -> bytes:
        """`frame` encoded with `field` holding `items`, each already encoded in this codec.

        The items are copied as they are, not decoded and encoded again (a presence list
        of thousands of entries encoded by the replicas that hold them).
        """
        raise NotImplementedError

    def decode(self, data: bytes | str) -> Any:
        raise NotImplementedError

    def decode_batch(self, data: bytes | str) -> list[Any]:
        """The objects of one server frame: one, or for a batched codec one or more."""
        raise NotImplementedError


class JsonCodec(Codec):
    def __init__(self, *, batched: bool = False) -> None:
        subprotocol = JSON_BATCH_SUBPROTOCOL if batched else JSON_SUBPROTOCOL
        super().__init__(subprotocol, binary=False, batched=batched, separator=b"\n")

    def encode(self, frame: Mapping[str, Any]) -> bytes:
        return orjson.dumps(frame)

    def encode_with_list(self, frame: Mapping[str, Any], field: str, items: list[bytes]) -> bytes:
        pairs = [
            orjson.dumps(key)
            + b":"
            + (b"[" + b",".join(items) + b"]" if key == field else orjson.dumps(value))
            for key, value in frame.items()
        ]
        return b"{" + b",".join(pairs) + b"}"

    def decode(self, data: bytes | str) -> Any:
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"invalid JSON: {e}") from e
        if isinstance(data, str):
            # Scanned as text: most frames come as text and need no encoding back to bytes.
            if _LONG_RUN_TEXT.search(data) is not None:
                _check_integer_literals(data.encode())
        elif _LONG_RUN.search(data) is not None:
            _check_integer_literals(data)
        return value

    def decode_batch(self, data: bytes | str) -> list[Any]:
        if not self.batched:
            return [self.decode(data)]
        lines = data.split("\n") if isinstance(data, str) else data.split(b"\n")
        return [self.decode(line) for line in lines]


class MsgpackCodec(Codec):
    def __init__(self, *, batched: bool = False) -> None:
        subprotocol = MSGPACK_BATCH_SUBPROTOCOL if batched else MSGPACK_SUBPROTOCOL
        super().__init__(subprotocol, binary=True, batched=batched, separator=b"")

    def encode(self, frame: Mapping[str, Any]) -> bytes:
        packed: bytes = msgpack.packb(frame, use_bin_type=True)
        return packed

    def encode_with_list(self, frame: Mapping[str, Any], field: str, items: list[bytes]) -> bytes:
        parts = [_msgpack_header(len(frame), 0x80, 0xDE)]
        for key, value in frame.items():
            parts.append(msgpack.packb(key, use_bin_type=True))
            if key == field:
                parts.append(_msgpack_header(len(items), 0x90, 0xDC))
                parts.extend(items)
            else:
                parts.append(msgpack.packb(value, use_bin_type=True))
        return b"".join(parts)

    def decode(self, data: bytes | str) -> Any:
        if isinstance(data, str):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "MessagePack frames must be binary")
        try:
            return msgpack.unpackb(data, raw=False, strict_map_key=True)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"invalid MessagePack: {e}") from e

    def decode_batch(self, data: bytes | str) -> list[Any]:
        if not self.batched:
            return [self.decode(data)]
        if isinstance(data, str):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "MessagePack frames must be binary")
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=len(data))
        unpacker.feed(data)
        objects, end = [], 0
        try:
            for obj in unpacker:
                objects.append(obj)
                end = unpacker.tell()  # after the last whole object (a partial one moves it)
        except (ValueError, msgpack.FormatError, msgpack.StackError) as e:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"invalid MessagePack: {e}") from e
        if not objects or end != len(data):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "invalid MessagePack: truncated object")
        return objects


JSON: Final = JsonCodec()
MSGPACK: Final = MsgpackCodec()
JSON_BATCH: Final = JsonCodec(batched=True)
MSGPACK_BATCH: Final = MsgpackCodec(batched=True)
CODECS: Final[Mapping[str, Codec]] = {
    c.subprotocol: c for c in (JSON, MSGPACK, JSON_BATCH, MSGPACK_BATCH)
}


def _check_integer_literals(data: bytes) -> None:
    """Refuse JSON (already known to be valid) holding an integer literal beyond 64 bits.

    Strings are blanked first, so digits inside them do not count; every digit run left
    belongs to a number, and is an integer literal unless a point or exponent is next to
    it. Regular expressions do the scanning; the Python loop runs once per run of 19 digits
    or more, so even a frame made of nothing else costs less than checking its values.
    """
    bare = _STRINGS.sub(b'""', data)
    for run in _LONG_RUN.finditer(bare):
        start, end = run.span()
        before = bare[start - 1 : start]
        if before in _NOT_INTEGER_BEFORE or bare[end : end + 1] in _NOT_INTEGER_AFTER:
            continue
        negative = before == b"-"
        if negative and bare[start - 2 : start - 1] in (b"e", b"E"):
            continue  # a negative exponent
        digits = run.group()
        limit = _LIMITS[negative]
        if len(digits) > len(limit) or (len(digits) == len(limit) and digits > limit):
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, "an integer does not fit in 64 bits (-2^63 to 2^64-1)"
            )


def check_json_value(value: object, depth: int = 0) -> None:
    """Raise `ProtocolError(bad_request)` unless `value` is a JSON value nested at most 32 deep.

    `depth` is the number of arrays and objects around `value`; an array or object, empty
    or not, is one more level, so 33 nested empty arrays are as deep as 33 holding a number.
    """
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "payload numbers must be finite")
        return
    if isinstance(value, (list, dict)) and depth >= MAX_NESTING:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"payload is nested deeper than {MAX_NESTING}")
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
