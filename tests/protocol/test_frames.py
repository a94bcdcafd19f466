"""Client frame parsing and server frame building."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from neurelay.errors import ProtocolError
from neurelay.protocol import frames
from neurelay.protocol.channels import Channel
from neurelay.protocol.codecs import check_json_value
from neurelay.protocol.codes import ErrorCode
from neurelay.protocol.frames import (
    Authenticate,
    Ping,
    Publish,
    Subscribe,
    Unsubscribe,
    parse_client_frame,
)

AGENT_1 = Channel("agent", "1")


def _refusal(obj: object) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_client_frame(obj)
    return info.value


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


# -- every client frame type ------------------------------------------------------------------


def test_ping_is_parsed() -> None:
    assert parse_client_frame({"type": "ping", "id": 1}) == Ping(1)


def test_frame_without_id_parses_with_id_none() -> None:
    assert parse_client_frame({"type": "ping"}) == Ping(None)


def test_explicit_null_id_is_the_same_as_no_id() -> None:
    assert parse_client_frame({"type": "ping", "id": None}) == Ping(None)


def test_authenticate_is_parsed() -> None:
    frame = parse_client_frame({"type": "authenticate", "id": "a", "token": "t.o.k"})

    assert frame == Authenticate("a", "t.o.k")


def test_subscribe_is_parsed_with_channel() -> None:
    frame = parse_client_frame({"type": "subscribe", "id": 2, "channel": "agent:1"})

    assert frame == Subscribe(2, AGENT_1, None, None)


def test_subscribe_with_since_is_parsed() -> None:
    frame = parse_client_frame({"type": "subscribe", "channel": "agent:1", "since": 17})

    assert frame == Subscribe(None, AGENT_1, since=17, last=None)


def test_subscribe_with_last_is_parsed() -> None:
    frame = parse_client_frame({"type": "subscribe", "channel": "agent:1", "last": 5})

    assert frame == Subscribe(None, AGENT_1, since=None, last=5)


def test_subscribe_with_null_since_and_last_counts_as_neither() -> None:
    frame = parse_client_frame(
        {"type": "subscribe", "channel": "agent:1", "since": None, "last": None}
    )

    assert frame == Subscribe(None, AGENT_1, None, None)


def test_unsubscribe_is_parsed() -> None:
    frame = parse_client_frame({"type": "unsubscribe", "id": "u", "channel": "system"})

    assert frame == Unsubscribe("u", Channel("system", None))


@pytest.mark.parametrize("payload", [None, 0, "text", [1, 2], {"a": {"b": [True]}}, _nested(32)])
def test_publish_is_parsed_with_any_json_payload(payload: Any) -> None:
    frame = parse_client_frame(
        {"type": "publish", "id": 9, "channel": "agent:1", "payload": payload}
    )

    assert frame == Publish(9, AGENT_1, payload)


# -- shape of the frame -----------------------------------------------------------------------


@pytest.mark.parametrize("obj", [None, [], ["ping"], "ping", 1, b"{}"])
def test_frame_that_is_not_an_object_is_a_bad_request(obj: object) -> None:
    error = _refusal(obj)

    assert error.code is ErrorCode.BAD_REQUEST
    assert error.frame_id is None


def test_missing_type_is_a_bad_request_echoing_the_id() -> None:
    error = _refusal({"id": 5})

    assert (error.code, error.frame_id) == (ErrorCode.BAD_REQUEST, 5)


@pytest.mark.parametrize("kind", [None, 1, True, ["ping"], {"t": "ping"}])
def test_non_string_type_is_a_bad_request_echoing_the_id(kind: object) -> None:
    error = _refusal({"type": kind, "id": "x"})

    assert (error.code, error.frame_id) == (ErrorCode.BAD_REQUEST, "x")


@pytest.mark.parametrize("kind", ["", "PING", "pong", "message", "subscribed", "auth", "ping "])
def test_unknown_type_is_unknown_type_echoing_the_id(kind: str) -> None:
    error = _refusal({"type": kind, "id": 7})

    assert (error.code, error.frame_id) == (ErrorCode.UNKNOWN_TYPE, 7)


def test_huge_unknown_type_is_not_copied_whole_into_the_message() -> None:
    error = _refusal({"type": "x" * 1_000_000, "id": 1})

    assert error.code is ErrorCode.UNKNOWN_TYPE
    assert len(error.message) < 200


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "ping", "id": 1, "extra": True},
        {"type": "authenticate", "id": 1, "token": "t", "channel": "agent:1"},
        {"type": "subscribe", "id": 1, "channel": "agent:1", "payload": 1},
        {"type": "unsubscribe", "id": 1, "channel": "agent:1", "since": 1},
        {"type": "publish", "id": 1, "channel": "agent:1", "payload": 1, "last": 1},
        {"type": "ping", "id": 1, "Type": "ping"},
    ],
)
def test_unknown_field_is_a_bad_request_echoing_the_id(obj: dict[str, Any]) -> None:
    error = _refusal(obj)

    assert (error.code, error.frame_id) == (ErrorCode.BAD_REQUEST, 1)
    assert "unknown field" in error.message


def test_unknown_field_message_names_the_field() -> None:
    error = _refusal({"type": "ping", "colour": "blue"})

    assert "colour" in error.message


def test_binary_key_from_msgpack_is_an_unknown_field() -> None:
    error = _refusal({"type": "ping", "id": 1, b"id": 2})

    assert (error.code, error.frame_id) == (ErrorCode.BAD_REQUEST, 1)


def test_many_huge_unknown_fields_give_a_bounded_message() -> None:
    obj: dict[str, Any] = {"type": "ping"}
    obj.update({f"{i}" + "k" * 10_000: i for i in range(100)})

    error = _refusal(obj)

    assert error.code is ErrorCode.BAD_REQUEST
    assert len(error.message) < 1000


# -- id ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("frame_id", ["a", "x" * 128, 0, 1, 2**53 - 1])
def test_id_within_bounds_is_echoed_on_the_frame(frame_id: str | int) -> None:
    assert parse_client_frame({"type": "ping", "id": frame_id}) == Ping(frame_id)


@pytest.mark.parametrize(
    "frame_id",
    [
        pytest.param("", id="empty-string"),
        pytest.param("x" * 129, id="string-129"),
        pytest.param("x" * 1_000_000, id="huge-string"),
        pytest.param(-1, id="negative"),
        pytest.param(2**53, id="beyond-safe-integer"),
        pytest.param(True, id="true"),
        pytest.param(False, id="false"),
        pytest.param(1.0, id="float"),
        pytest.param([1], id="list"),
        pytest.param({"id": 1}, id="object"),
        pytest.param(b"id", id="bytes"),
    ],
)
def test_id_out_of_bounds_or_of_wrong_type_is_a_bad_request_without_echo(
    frame_id: object,
) -> None:
    error = _refusal({"type": "ping", "id": frame_id})

    assert error.code is ErrorCode.BAD_REQUEST
    assert error.frame_id is None


def test_invalid_id_is_reported_even_when_the_type_is_unknown() -> None:
    error = _refusal({"type": "nope", "id": True})

    assert error.code is ErrorCode.BAD_REQUEST


# -- authenticate -----------------------------------------------------------------------------


def test_token_of_16_kib_is_accepted() -> None:
    token = "t" * 16 * 1024

    assert parse_client_frame({"type": "authenticate", "token": token}) == Authenticate(None, token)


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param({"type": "authenticate", "id": 3}, id="missing"),
        pytest.param({"type": "authenticate", "id": 3, "token": None}, id="null"),
        pytest.param({"type": "authenticate", "id": 3, "token": ""}, id="empty"),
        pytest.param({"type": "authenticate", "id": 3, "token": 123}, id="integer"),
        pytest.param({"type": "authenticate", "id": 3, "token": ["t"]}, id="list"),
        pytest.param({"type": "authenticate", "id": 3, "token": b"t"}, id="bytes"),
        pytest.param({"type": "authenticate", "id": 3, "token": "t" * 16385}, id="16-kib-plus-1"),
        pytest.param({"type": "authenticate", "id": 3, "token": "t" * 10**7}, id="huge"),
    ],
)
def test_bad_token_is_a_bad_request_echoing_the_id(obj: dict[str, Any]) -> None:
    error = _refusal(obj)

    assert (error.code, error.frame_id) == (ErrorCode.BAD_REQUEST, 3)


# -- channel ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["subscribe", "unsubscribe", "publish"])
def test_missing_channel_is_a_bad_request_echoing_the_id(kind: str) -> None:
    obj: dict[str, Any] = {"type": kind, "id": "m"}
    if kind == "publish":
        obj["payload"] = 1

    error = _refusal(obj)

    assert (error.code, error.frame_id) == (ErrorCode.BAD_REQUEST, "m")


@pytest.mark.parametrize("kind", ["subscribe", "unsubscribe", "publish"])
@pytest.mark.parametrize("channel", ["agent:*", "agent:>", "a.b:c", "Agent:1", "system:x", None, 1])
def test_invalid_channel_is_invalid_channel_echoing_the_id(kind: str, channel: object) -> None:
    obj: dict[str, Any] = {"type": kind, "id": 11, "channel": channel}
    if kind == "publish":
        obj["payload"] = 1

    error = _refusal(obj)

    assert (error.code, error.frame_id) == (ErrorCode.INVALID_CHANNEL, 11)


def test_invalid_channel_is_echoed_in_the_error() -> None:
    error = _refusal({"type": "subscribe", "channel": "agent:*"})

    assert error.channel == "agent:*"


def test_huge_channel_is_invalid_channel_without_echoing_it() -> None:
    error = _refusal({"type": "subscribe", "id": 1, "channel": "agent:" + "x" * 1_000_000})

    assert (error.code, error.frame_id, error.channel) == (ErrorCode.INVALID_CHANNEL, 1, None)


# -- subscribe: since / last ------------------------------------------------------------------


@pytest.mark.parametrize("since", [0, 1, 2**32, 2**53 - 1])
def test_since_within_bounds_is_accepted(since: int) -> None:
    frame = parse_client_frame({"type": "subscribe", "channel": "agent:1", "since": since})

    assert isinstance(frame, Subscribe)
    assert frame.since == since


@pytest.mark.parametrize("last", [1, 100, 10_000])
def test_last_within_bounds_is_accepted(last: int) -> None:
    frame = parse_client_frame({"type": "subscribe", "channel": "agent:1", "last": last})

    assert isinstance(frame, Subscribe)
    assert frame.last == last


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("since", -1),
        ("since", 2**53),
        ("since", True),
        ("since", False),
        ("since", 1.0),
        ("since", "1"),
        ("since", [1]),
        ("last", 0),
        ("last", -1),
        ("last", 10_001),
        ("last", True),
        ("last", 5.0),
        ("last", "5"),
    ],
)
def test_since_or_last_out_of_bounds_or_not_an_integer_is_a_bad_request(
    field: str, value: object
) -> None:
    error = _refusal({"type": "subscribe", "id": 4, "channel": "agent:1", field: value})

    assert (error.code, error.frame_id) == (ErrorCode.BAD_REQUEST, 4)
    assert field in error.message


def test_since_and_last_together_are_a_bad_request() -> None:
    error = _refusal({"type": "subscribe", "id": 4, "channel": "agent:1", "since": 1, "last": 1})

    assert (error.code, error.frame_id) == (ErrorCode.BAD_REQUEST, 4)


# -- publish: payload -------------------------------------------------------------------------


def test_publish_without_payload_is_a_bad_request_echoing_id_and_channel() -> None:
    error = _refusal({"type": "publish", "id": 8, "channel": "agent:1"})

    assert (error.code, error.frame_id, error.channel) == (ErrorCode.BAD_REQUEST, 8, "agent:1")


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(_nested(33), id="33-deep"),
        pytest.param(_nested(10_000), id="10000-deep"),
        pytest.param(math.nan, id="nan"),
        pytest.param({"x": math.inf}, id="infinity"),
        pytest.param(b"raw", id="bytes"),
        pytest.param({1: "a"}, id="int-key"),
    ],
)
def test_publish_with_non_json_payload_is_a_bad_request_echoing_the_id(payload: object) -> None:
    error = _refusal({"type": "publish", "id": 8, "channel": "agent:1", "payload": payload})

    assert (error.code, error.frame_id) == (ErrorCode.BAD_REQUEST, 8)


def test_publish_with_huge_string_payload_is_accepted_by_the_parser() -> None:
    payload = "p" * 5_000_000

    frame = parse_client_frame({"type": "publish", "channel": "agent:1", "payload": payload})

    assert isinstance(frame, Publish)
    assert frame.payload == payload


# -- server frames ----------------------------------------------------------------------------


def test_authenticated_frame_carries_user_and_expiry() -> None:
    assert frames.authenticated("alice", 1_700_000_000_000, "a") == {
        "type": "authenticated",
        "id": "a",
        "user": "alice",
        "expires_at": 1_700_000_000_000,
    }


def test_subscribed_frame_carries_seq_and_recovered() -> None:
    assert frames.subscribed("agent:1", 12, False, 3) == {
        "type": "subscribed",
        "id": 3,
        "channel": "agent:1",
        "seq": 12,
        "recovered": False,
    }


def test_unsubscribed_frame_carries_the_channel() -> None:
    assert frames.unsubscribed("agent:1", 3) == {
        "type": "unsubscribed",
        "id": 3,
        "channel": "agent:1",
    }


def test_published_frame_omits_duplicate_unless_true() -> None:
    assert frames.published("agent:1", 5, 1) == {
        "type": "published",
        "id": 1,
        "channel": "agent:1",
        "seq": 5,
    }
    assert frames.published("agent:1", 5, 1, duplicate=True)["duplicate"] is True


def test_message_frame_keeps_a_null_payload() -> None:
    frame = frames.message("agent:1", None, None, 4, 1000)

    assert frame == {
        "type": "message",
        "channel": "agent:1",
        "seq": 4,
        "timestamp": 1000,
        "payload": None,
    }


def test_message_frame_carries_the_message_id_when_given() -> None:
    assert frames.message("agent:1", {"a": 1}, "m-1", 4, 1000)["id"] == "m-1"


def test_error_frame_carries_code_message_and_channel() -> None:
    assert frames.error(ErrorCode.FORBIDDEN, "no", 2, "agent:1") == {
        "type": "error",
        "id": 2,
        "code": "forbidden",
        "message": "no",
        "channel": "agent:1",
    }


def test_error_from_exception_echoes_its_id_and_channel() -> None:
    exc = ProtocolError(ErrorCode.NOT_SUBSCRIBED, "nope", frame_id="f", channel="agent:1")

    assert frames.error_from(exc) == {
        "type": "error",
        "id": "f",
        "code": "not_subscribed",
        "message": "nope",
        "channel": "agent:1",
    }


def test_pong_echoes_the_id() -> None:
    assert frames.pong(0) == {"type": "pong", "id": 0}


@pytest.mark.parametrize(
    "frame",
    [
        frames.authenticated("u", 1, None),
        frames.subscribed("agent:1", 1, True, None),
        frames.unsubscribed("agent:1", None),
        frames.published("agent:1", 1, None),
        frames.message("agent:1", 1, None, 1, 1),
        frames.error(ErrorCode.INTERNAL, "x"),
        frames.pong(None),
    ],
)
def test_server_frames_omit_fields_that_are_none(frame: dict[str, Any]) -> None:
    assert "id" not in frame
    assert None not in {v for k, v in frame.items() if k != "payload"}


def test_id_zero_and_false_values_are_not_omitted() -> None:
    assert frames.subscribed("agent:1", 0, False, 0) == {
        "type": "subscribed",
        "id": 0,
        "channel": "agent:1",
        "seq": 0,
        "recovered": False,
    }


# -- property ---------------------------------------------------------------------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=5),
    st.sampled_from(["agent:1", "system", "user:alice", "agent:*", "ping", "publish"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(st.text(max_size=5), st.integers(), st.binary(max_size=3)), inner, max_size=4
        ),
    ),
    max_leaves=20,
)
_KEYS = st.one_of(
    st.sampled_from(["type", "id", "token", "channel", "since", "last", "payload"]),
    st.text(max_size=8),
    st.binary(max_size=3),
)
_TYPES = st.one_of(
    st.sampled_from(["ping", "authenticate", "subscribe", "unsubscribe", "publish"]), _VALUES
)
_FRAMES = st.builds(
    lambda kind, fields: {**fields, "type": kind},
    _TYPES,
    st.dictionaries(_KEYS, _VALUES, max_size=6),
)


@given(obj=st.one_of(_FRAMES, _VALUES))
def test_arbitrary_objects_parse_to_a_frame_or_raise_protocol_error_only(obj: object) -> None:
    try:
        result: frames.ClientFrame | ProtocolError = parse_client_frame(obj)
    except ProtocolError as e:
        result = e

    if isinstance(result, ProtocolError):
        assert isinstance(result.code, ErrorCode)
        assert result.frame_id is None or isinstance(result.frame_id, str | int)
    else:
        assert isinstance(result, Authenticate | Subscribe | Unsubscribe | Publish | Ping)
        if isinstance(result, Publish):
            check_json_value(result.payload)
