"""Clients read server frames as types: what the gateway builds parses back unchanged."""

from __future__ import annotations

import pytest

from neurelay.errors import ProtocolError
from neurelay.protocol import frames
from neurelay.protocol.codes import ErrorCode
from neurelay.protocol.server_frames import (
    Authenticated,
    Error,
    Join,
    Leave,
    Member,
    Message,
    Pong,
    Presence,
    PresenceStats,
    Published,
    Subscribed,
    Unsubscribed,
    parse_server_frame,
)

ALICE = {"user": "alice", "connection": "r1-1", "info": {"name": "Alice"}}
BOB = {"user": "bob", "connection": "r2-1"}


@pytest.mark.parametrize(
    ("built", "typed"),
    [
        (
            frames.authenticated("alice", 1_700_000_000_000, "a1"),
            Authenticated("alice", 1_700_000_000_000, "a1"),
        ),
        (frames.subscribed("agent:1", 7, False, 3), Subscribed("agent:1", 7, False, 3)),
        (frames.unsubscribed("agent:1", "u"), Unsubscribed("agent:1", "u")),
        (frames.published("agent:1", 8, "p"), Published("agent:1", 8, False, "p")),
        (frames.published("agent:1", 8, "p", duplicate=True), Published("agent:1", 8, True, "p")),
        (frames.message("agent:1", None, None, 9, 123), Message("agent:1", None, 9, None, 123)),
        (
            frames.message("agent:1", {"k": [1]}, "m", 9, 123),
            Message("agent:1", {"k": [1]}, 9, "m", 123),
        ),
        (
            frames.error(ErrorCode.FORBIDDEN, "no", 5, "user:bob"),
            Error(ErrorCode.FORBIDDEN, "no", 5, "user:bob"),
        ),
        (frames.error(ErrorCode.TOKEN_EXPIRED, "renew"), Error(ErrorCode.TOKEN_EXPIRED, "renew")),
        (frames.pong(None), Pong()),
        (
            frames.presence("agent:1", [ALICE, BOB], False, 4),
            Presence(
                "agent:1",
                (Member("alice", "r1-1", {"name": "Alice"}), Member("bob", "r2-1")),
                False,
                4,
            ),
        ),
        (frames.presence("agent:1", [], True, None), Presence("agent:1", (), True)),
        (frames.presence_stats("agent:1", 2, 3, "s"), PresenceStats("agent:1", 2, 3, "s")),
        (frames.join("agent:1", ALICE), Join("agent:1", Member("alice", "r1-1", ALICE["info"]))),
        (frames.leave("agent:1", BOB), Leave("agent:1", Member("bob", "r2-1"))),
    ],
)
def test_every_server_frame_the_gateway_builds_parses_to_its_type(built, typed):
    assert parse_server_frame(built) == typed


def test_error_codes_arrive_as_the_enum():
    parsed = parse_server_frame(frames.error(ErrorCode.RATE_LIMITED, "slow down"))
    assert isinstance(parsed, Error)
    assert parsed.code is ErrorCode.RATE_LIMITED


def test_a_newer_gateway_may_add_frame_types_fields_and_error_codes():
    assert parse_server_frame({"type": "history_cleared", "channel": "agent:1"}) is None
    assert parse_server_frame({"type": "pong", "id": 1, "server": "g-2"}) == Pong(1)
    assert parse_server_frame({"type": "error", "code": "quota_exceeded", "message": "m"}) == Error(
        "quota_exceeded", "m"
    )


def test_fields_the_protocol_leaves_out_take_their_documented_defaults():
    # `seq` 0 and no `duplicate` for namespaces without history; `recovered` is sent always.
    assert parse_server_frame({"type": "published", "channel": "metrics:1"}) == Published(
        "metrics:1", 0
    )
    assert parse_server_frame({"type": "message", "channel": "metrics:1", "payload": 1}) == Message(
        "metrics:1", 1, 0, None, 0
    )


@pytest.mark.parametrize(
    ("obj", "complaint"),
    [
        (["pong"], "must be an object"),
        ({"type": "subscribed", "seq": 1, "recovered": True}, "'channel' is required"),
        ({"type": "subscribed", "channel": "a:1", "seq": "1"}, "'seq' has the wrong type"),
        ({"type": "subscribed", "channel": "a:1", "seq": True}, "'seq' has the wrong type"),
        (
            {"type": "subscribed", "channel": "a:1", "recovered": 1},
            "'recovered' has the wrong type",
        ),
        ({"type": "message", "channel": "a:1", "seq": 1}, "'payload' is required"),
        ({"type": "error", "code": 7, "message": "m"}, "'code' has the wrong type"),
        ({"type": "pong", "id": 1.5}, "'id' has the wrong type"),
        ({"type": "authenticated", "user": "alice"}, "'expires_at' is required"),
    ],
)
def test_a_malformed_known_frame_is_bad_request_naming_the_field(obj, complaint):
    with pytest.raises(ProtocolError, match=complaint) as raised:
        parse_server_frame(obj)
    assert raised.value.code is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize(
    "built",
    [
        frames.authenticate("t" * 20, "c1"),
        frames.subscribe("agent:1", "c2", since=4),
        frames.subscribe("agent:1", last=10),
        frames.unsubscribe("agent:1", 3),
        frames.publish("agent:1", None, "uuid"),
        frames.ping(),
    ],
)
def test_every_client_frame_builder_makes_a_frame_the_gateway_accepts(built):
    parsed = frames.parse_client_frame(built)
    assert parsed.id == built.get("id")
