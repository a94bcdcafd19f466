"""The Session's presence frames and the server API's acts on it, without I/O."""

from __future__ import annotations

import time
from typing import Any

import pytest

from neurelay.auth import mint_token
from neurelay.gateway.session import (
    Admit,
    Close,
    QueryPresence,
    Send,
    Session,
    StartSubscription,
    StopSubscription,
)
from neurelay.protocol.channels import Channel
from neurelay.protocol.codecs import JSON
from neurelay.protocol.codes import CloseCode
from tests.gateway.test_session import SECRET, live, send

ROOM = Channel("conversation", "room")
NAMESPACES = {
    "conversation": {"history_messages": 10, "presence": True, "join_leave": True},
    "agent": {"history_messages": 10},
}


def token(now: float, **kwargs: Any) -> str:
    kwargs.setdefault("channels", ("conversation:*", "agent:*"))
    return mint_token(SECRET, kwargs.pop("user", "alice"), now=now, **kwargs)


def logged_in(now: float, tok: str) -> Session:
    session = Session("conn-1", JSON, live(namespaces=NAMESPACES), now)
    [admit] = send(session, {"type": "authenticate", "token": tok}, now)
    assert isinstance(admit, Admit)
    session.admitted(admit.principal, True, None)
    return session


@pytest.fixture
def now() -> float:
    return time.time()


@pytest.mark.parametrize(("kind", "stats"), [("presence", False), ("presence_stats", True)])
def test_presence_request_becomes_a_query(now: float, kind: str, stats: bool) -> None:
    session = logged_in(now, token(now))

    actions = send(session, {"type": kind, "id": 7, "channel": "conversation:room"}, now)

    assert actions == [QueryPresence(ROOM, stats, 7)]


def test_presence_where_the_namespace_has_it_off_is_presence_disabled(now: float) -> None:
    session = logged_in(now, token(now))

    [reply] = send(session, {"type": "presence", "id": 1, "channel": "agent:1"}, now)

    assert isinstance(reply, Send)
    assert (reply.frame["code"], reply.frame["id"]) == ("presence_disabled", 1)


def test_presence_of_a_channel_one_may_not_read_is_forbidden(now: float) -> None:
    session = logged_in(now, token(now, channels=("agent:*",)))

    [reply] = send(session, {"type": "presence", "channel": "conversation:room"}, now)

    assert isinstance(reply, Send)
    assert reply.frame["code"] == "forbidden"


def test_presence_needs_authentication(now: float) -> None:
    session = Session("conn-1", JSON, live(namespaces=NAMESPACES), now)

    [reply] = send(session, {"type": "presence", "channel": "conversation:room"}, now)

    assert isinstance(reply, Send)
    assert reply.frame["code"] == "unauthenticated"


def test_presence_frame_with_an_unknown_field_is_a_bad_request(now: float) -> None:
    session = logged_in(now, token(now))

    [reply] = send(session, {"type": "presence", "channel": "conversation:r", "all": 1}, now)

    assert isinstance(reply, Send)
    assert reply.frame["code"] == "bad_request"


def test_server_unsubscribe_stops_a_subscription_and_tells_the_client(now: float) -> None:
    session = logged_in(now, token(now))
    [start] = send(session, {"type": "subscribe", "channel": "conversation:room"}, now)
    assert isinstance(start, StartSubscription)

    assert session.unsubscribed_by_server(ROOM) == [StopSubscription(ROOM, None, reply=True)]
    assert session.unsubscribed_by_server(ROOM) == []
    assert session.subscriptions == {}


def test_server_disconnect_closes_with_4008(now: float) -> None:
    session = logged_in(now, token(now))

    [close] = session.disconnected_by_server()

    assert close == Close(CloseCode.DISCONNECTED, "disconnected by the server")


def test_revocation_closes_only_connections_with_older_tokens(now: float) -> None:
    older = logged_in(now, token(now - 60))
    newer = logged_in(now, token(now))
    cut_off = int((now - 30) * 1000)

    assert older.revoked_before(cut_off) == [Close(CloseCode.TOKEN_REVOKED, "token revoked")]
    assert newer.revoked_before(cut_off) == []


def test_reauthenticating_with_a_revoked_token_is_auth_failed(now: float) -> None:
    session = logged_in(now, token(now - 60))
    session.live.revocations.revoke("alice", int((now - 30) * 1000), now + 3600)

    [reply] = send(session, {"type": "authenticate", "token": token(now - 50)}, now)

    assert isinstance(reply, Send)
    assert reply.frame["code"] == "auth_failed"
    assert "revoked" in reply.frame["message"]
