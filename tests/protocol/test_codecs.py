"""JSON and MessagePack codecs and the JSON-value rule for payloads."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from neurelay.errors import ProtocolError
from neurelay.protocol.codecs import (
    CODECS,
    JSON,
    JSON_BATCH,
    JSON_BATCH_SUBPROTOCOL,
    JSON_SUBPROTOCOL,
    MSGPACK,
    MSGPACK_BATCH,
    MSGPACK_BATCH_SUBPROTOCOL,
    MSGPACK_SUBPROTOCOL,
    Codec,
    check_json_value,
)
from neurelay.protocol.codes import ErrorCode

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)


def _nested_lists(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def _nested_objects(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value


def _decode_error(decode: Any, data: Any) -> ProtocolError | None:
    try:
        decode(data)
    except ProtocolError as e:
        return e
    return None


def _bad_request(decode: Any, data: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode(data)
    assert info.value.code is ErrorCode.BAD_REQUEST
    return info.value


# -- registry ---------------------------------------------------------------------------------


def test_codecs_are_registered_by_subprotocol_with_their_frame_kind() -> None:
    assert CODECS == {
        JSON_SUBPROTOCOL: JSON,
        MSGPACK_SUBPROTOCOL: MSGPACK,
        JSON_BATCH_SUBPROTOCOL: JSON_BATCH,
        MSGPACK_BATCH_SUBPROTOCOL: MSGPACK_BATCH,
    }
    assert JSON_BATCH.subprotocol == "neurelay.v1.json+batch"
    assert MSGPACK_BATCH.subprotocol == "neurelay.v1.msgpack+batch"
    assert (JSON_BATCH.binary, MSGPACK_BATCH.binary) == (False, True)
    assert JSON.subprotocol == "neurelay.v1.json"
    assert MSGPACK.subprotocol == "neurelay.v1.msgpack"
    assert JSON.binary is False
    assert MSGPACK.binary is True


# -- JSON -------------------------------------------------------------------------------------


def test_json_encodes_a_frame_to_utf8_bytes() -> None:
    encoded = JSON.encode({"type": "pong", "id": 1, "text": "é"})

    assert isinstance(encoded, bytes)
    assert encoded.decode("utf-8") == '{"type":"pong","id":1,"text":"é"}'


@pytest.mark.parametrize("data", ['{"type":"ping","id":"a"}', b'{"type":"ping","id":"a"}'])
def test_json_decodes_text_and_bytes_alike(data: str | bytes) -> None:
    assert JSON.decode(data) == {"type": "ping", "id": "a"}


@pytest.mark.parametrize(
    "data",
    [
        pytest.param("", id="empty"),
        pytest.param("{", id="truncated"),
        pytest.param("{'a': 1}", id="single-quotes"),
        pytest.param('{"a": 1,}', id="trailing-comma"),
        pytest.param('{"a": 1} x', id="trailing-garbage"),
        pytest.param("NaN", id="nan"),
        pytest.param("Infinity", id="infinity"),
        pytest.param("1e400", id="overflowing-float"),
        pytest.param(b"\xff\xfe", id="invalid-utf8"),
        pytest.param('"\\ud800"', id="lone-surrogate-escape"),
        pytest.param("[" * 5000 + "]" * 5000, id="deeply-nested"),
    ],
)
def test_malformed_json_is_a_bad_request(data: str | bytes) -> None:
    error = _bad_request(JSON.decode, data)

    assert "invalid JSON" in error.message


# -- MessagePack ------------------------------------------------------------------------------


def test_msgpack_round_trips_a_frame() -> None:
    frame = {"type": "message", "channel": "agent:1", "seq": 3, "payload": {"x": [1.5, None]}}

    encoded = MSGPACK.encode(frame)

    assert isinstance(encoded, bytes)
    assert MSGPACK.decode(encoded) == frame


def test_msgpack_encodes_strings_as_str_and_bytes_as_bin() -> None:
    encoded = MSGPACK.encode({"s": "x", "b": b"x"})

    assert msgpack.unpackb(encoded, raw=True) == {b"s": b"x", b"b": b"x"}
    assert msgpack.unpackb(encoded, raw=False) == {"s": "x", "b": b"x"}


def test_msgpack_text_frame_is_refused() -> None:
    error = _bad_request(MSGPACK.decode, '{"type":"ping"}')

    assert "binary" in error.message


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xc1", id="reserved-byte"),
        pytest.param(b"\x92\x01", id="truncated-array"),
        pytest.param(b"\x01\x02", id="extra-data"),
        pytest.param(b"\x81\x91\x01\x01", id="list-map-key"),
        pytest.param(b"\x81\x01\x01", id="int-map-key"),
        pytest.param(b"\x81\xc0\x01", id="nil-map-key"),
        pytest.param(b"\xa2\xed\xa0", id="invalid-utf8-str"),
        pytest.param(b"\xdd\xff\xff\xff\xff", id="huge-array-header"),
        pytest.param(b"\xd7\xff\xff\xff\xff\xff\xff\xff\xff\xff", id="invalid-timestamp"),
        pytest.param(b"\x91" * 5000 + b"\xc0", id="deeply-nested"),
    ],
)
def test_malformed_msgpack_is_a_bad_request(data: bytes) -> None:
    error = _bad_request(MSGPACK.decode, data)

    assert "invalid MessagePack" in error.message


def test_msgpack_ext_type_decodes_but_is_not_a_json_value() -> None:
    decoded = MSGPACK.decode(msgpack.packb(msgpack.ExtType(5, b"\x00")))

    assert isinstance(decoded, msgpack.ExtType)
    with pytest.raises(ProtocolError) as info:
        check_json_value(decoded)
    assert info.value.code is ErrorCode.BAD_REQUEST


# -- check_json_value -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -(2**63),
        2**64,
        1.5,
        -0.0,
        "",
        "text",
        [],
        {},
        [1, "a", None],
        {"a": {"b": [1, 2.5, {"c": None}]}},
    ],
)
def test_json_values_pass_the_check(value: object) -> None:
    check_json_value(value)


def test_nesting_up_to_32_levels_is_accepted() -> None:
    check_json_value(_nested_lists(32))
    check_json_value(_nested_objects(32))


@pytest.mark.parametrize("build", [_nested_lists, _nested_objects])
def test_nesting_of_33_levels_is_a_bad_request(build: Any) -> None:
    with pytest.raises(ProtocolError) as info:
        check_json_value(build(33))

    assert info.value.code is ErrorCode.BAD_REQUEST
    assert "nested" in info.value.message


def test_extremely_deep_nesting_is_refused_without_recursion_error() -> None:
    with pytest.raises(ProtocolError) as info:
        check_json_value(_nested_lists(100_000))

    assert info.value.code is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, -math.inf, [1, math.nan], {"a": {"b": math.inf}}],
)
def test_non_finite_float_is_a_bad_request(value: object) -> None:
    with pytest.raises(ProtocolError) as info:
        check_json_value(value)

    assert info.value.code is ErrorCode.BAD_REQUEST
    assert "finite" in info.value.message


@pytest.mark.parametrize("value", [{1: "a"}, {b"k": 1}, {None: 1}, {"ok": {(1, 2): 1}}])
def test_non_string_object_key_is_a_bad_request(value: object) -> None:
    with pytest.raises(ProtocolError) as info:
        check_json_value(value)

    assert info.value.code is ErrorCode.BAD_REQUEST
    assert "keys" in info.value.message


@pytest.mark.parametrize(
    "value",
    [
        b"bytes",
        bytearray(b"x"),
        msgpack.ExtType(1, b"x"),
        msgpack.Timestamp(0, 0),
        (1, 2),
        {1, 2},
        object(),
        [b"nested"],
        {"a": [msgpack.ExtType(1, b"")]},
    ],
)
def test_binary_extension_and_other_types_are_a_bad_request(value: object) -> None:
    with pytest.raises(ProtocolError) as info:
        check_json_value(value)

    assert info.value.code is ErrorCode.BAD_REQUEST
    assert "not a JSON value" in info.value.message


# -- properties -------------------------------------------------------------------------------


@given(value=JSON_VALUES)
def test_any_json_value_round_trips_through_json(value: Any) -> None:
    check_json_value(value)

    assert JSON.decode(JSON.encode({"payload": value})) == {"payload": value}


@given(value=JSON_VALUES)
def test_any_json_value_round_trips_through_msgpack(value: Any) -> None:
    assert MSGPACK.decode(MSGPACK.encode({"payload": value})) == {"payload": value}


@given(value=JSON_VALUES)
def test_any_json_value_crosses_from_json_to_msgpack_unchanged(value: Any) -> None:
    via_json = JSON.decode(JSON.encode({"payload": value}))

    assert MSGPACK.decode(MSGPACK.encode(via_json)) == {"payload": value}


@given(data=st.binary(max_size=256))
def test_arbitrary_bytes_to_the_json_decoder_raise_only_protocol_errors(data: bytes) -> None:
    error = _decode_error(JSON.decode, data)

    assert error is None or error.code is ErrorCode.BAD_REQUEST


@given(data=st.binary(max_size=256))
def test_arbitrary_bytes_to_the_msgpack_decoder_raise_only_protocol_errors(data: bytes) -> None:
    error = _decode_error(MSGPACK.decode, data)

    assert error is None or error.code is ErrorCode.BAD_REQUEST


@given(data=st.text(max_size=256))
def test_arbitrary_text_to_the_json_decoder_raises_only_protocol_errors(data: str) -> None:
    error = _decode_error(JSON.decode, data)

    assert error is None or error.code is ErrorCode.BAD_REQUEST


@given(value=JSON_VALUES, cut=st.integers(min_value=0, max_value=1000))
def test_truncated_msgpack_is_a_bad_request(value: Any, cut: int) -> None:
    encoded = MSGPACK.encode({"payload": value})

    with pytest.raises(ProtocolError) as info:
        MSGPACK.decode(encoded[: min(cut, len(encoded) - 1)])
    assert info.value.code is ErrorCode.BAD_REQUEST


# -- integers beyond 64 bits ------------------------------------------------------------------


@pytest.mark.parametrize(
    "literal",
    ["18446744073709551616", "-9223372036854775809", "1" + "0" * 40, "-" + "9" * 30],
)
@pytest.mark.parametrize("as_bytes", [False, True], ids=["text", "bytes"])
def test_a_json_integer_beyond_64_bits_is_a_bad_request_not_a_float(
    literal: str, as_bytes: bool
) -> None:
    data = f'{{"type": "publish", "channel": "agent:1", "payload": {{"n": [{literal}]}}}}'
    error = _bad_request(JSON.decode, data.encode() if as_bytes else data)

    assert "64 bits" in error.message


@pytest.mark.parametrize("number", [2**64 - 1, -(2**63), 1_700_000_000_000_000_000, 0])
def test_json_integers_within_64_bits_stay_exact_integers(number: int) -> None:
    assert JSON.decode(f'{{"n": {number}}}') == {"n": number}


@pytest.mark.parametrize(
    "value",
    [
        '"123456789012345678901234567890"',
        '"\\\\\\"123456789012345678901234567890"',
        '"-99999999999999999999 \\u0022 99999999999999999999"',
        "0.12345678901234567890123",
        "123456789012345678901234.5",
        "1e-0000000000000000000001",
        "1E+0000000000000000000001",
        "-123456789012345678901234e-3",
    ],
)
def test_long_digit_runs_in_strings_fractions_and_exponents_are_not_integers(value: str) -> None:
    data = '{"v": ' + value + "}"
    assert JSON.decode(data) == {"v": orjson.loads(value)}


def test_the_64_bit_extremes_arrive_exact_whichever_format_carries_them() -> None:
    # MessagePack has no integer beyond 64 bits; the extremes it does carry cross to JSON whole.
    frame = {"payload": [2**64 - 1, -(2**63)]}
    assert JSON.decode(JSON.encode(MSGPACK.decode(MSGPACK.encode(frame)))) == frame
    with pytest.raises(OverflowError):
        msgpack.packb(2**64)


# -- nesting counts containers, empty or not --------------------------------------------------


@pytest.mark.parametrize("empty", [[], {}], ids=["array", "object"])
def test_33_levels_ending_in_an_empty_container_are_a_bad_request(empty: Any) -> None:
    value: Any = empty
    for _ in range(32):
        value = [value]
    with pytest.raises(ProtocolError) as info:
        check_json_value(value)

    assert info.value.code is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize("empty", [[], {}], ids=["array", "object"])
def test_32_levels_ending_in_an_empty_container_are_accepted(empty: Any) -> None:
    value: Any = empty
    for _ in range(31):
        value = [value]
    check_json_value(value)


@pytest.mark.parametrize("codec", [JSON, MSGPACK], ids=["json", "msgpack"])
@pytest.mark.parametrize("count", [0, 1, 15, 16, 65_535, 65_536])
def test_a_list_of_encoded_items_is_spliced_into_the_frame_as_if_encoded_with_it(
    codec: Codec, count: int
) -> None:
    items = [{"user": f"u{n}", "connection": f"c{n}", "info": {"n": n}} for n in range(count)]
    frame = {"type": "presence", "id": 7, "channel": "agent:1", "clients": [], "truncated": True}

    spliced = codec.encode_with_list(frame, "clients", [codec.encode(item) for item in items])

    assert codec.decode(spliced) == {**frame, "clients": items}
    assert spliced == codec.encode({**frame, "clients": items})


@pytest.mark.parametrize("codec", [JSON, MSGPACK], ids=["json", "msgpack"])
def test_a_frame_of_sixteen_fields_keeps_them_all_when_spliced(codec: Codec) -> None:
    frame: dict[str, Any] = {f"k{n}": n for n in range(15)} | {"list": []}

    spliced = codec.encode_with_list(frame, "list", [codec.encode("x")])

    assert codec.decode(spliced) == {**frame, "list": ["x"]}
