"""The per-connection Session state machine, driven synchronously with explicit `now` values.

Tokens are verified against the real clock, so `now` starts at the current time and every
step of a test is an explicit offset from it; nothing sleeps.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from neurelay.auth import Principal, mint_token
from neurelay.config import AuthSettings, GatewayConfig, NamespaceSettings
from neurelay.errors import ProtocolError
from neurelay.gateway.session import (
    Action,
    Admit,
    Close,
    Phase,
    PublishMessage,
    Send,
    Session,
    StartSubscription,
    StopSubscription,
)
from neurelay.gateway.settings import LiveSettings
from neurelay.protocol.channels import Channel, parse_channel
from neurelay.protocol.codecs import JSON, MSGPACK
from neurelay.protocol.codes import CloseCode, ErrorCode

SECRET = "session-test-secret-" + "s" * 32
AGENT_1 = Channel("agent", "1")


def config(*, namespaces: dict[str, Any] | None = None, **limits: Any) -> GatewayConfig:
    data: dict[str, Any] = {"auth": {"secret": SECRET}, "limits": limits}
    if namespaces is not None:
        data["namespaces"] = namespaces
    return GatewayConfig.model_validate(data)


def live(**kwargs: Any) -> LiveSettings:
    return LiveSettings(config(**kwargs))


def token(
    now: float,
    user: str = "alice",
    *,
    channels: tuple[str, ...] = ("agent:*", "conversation:*"),
    publish: tuple[str, ...] = ("agent:*", "conversation:*"),
    ttl: float = 3600,
) -> str:
    return mint_token(SECRET, user, channels=channels, publish=publish, ttl_seconds=ttl, now=now)


def send(session: Session, frame: dict[str, Any], now: float) -> list[Action]:
    return session.receive(JSON.encode(frame).decode(), now)


def login(session: Session, now: float, tok: str | None = None) -> Principal:
    actions = send(session, {"type": "authenticate", "id": "auth", "token": tok or token(now)}, now)
    assert len(actions) == 1
    admit = actions[0]
    assert isinstance(admit, Admit)
    session.admitted(admit.principal, True, admit.frame_id)
    return admit.principal


def the_error(actions: list[Action]) -> dict[str, Any]:
    assert len(actions) == 1, actions
    action = actions[0]
    assert isinstance(action, Send)
    assert action.frame["type"] == "error", action.frame
    return action.frame


def subscribe(session: Session, channel: str, now: float, frame_id: Any = None) -> list[Action]:
    frame: dict[str, Any] = {"type": "subscribe", "channel": channel}
    if frame_id is not None:
        frame["id"] = frame_id
    return send(session, frame, now)


@pytest.fixture
def now() -> float:
    return time.time()


@pytest.fixture
def session(now: float) -> Session:
    return Session("conn-1", JSON, live(), now)


@pytest.fixture
def active(session: Session, now: float) -> Session:
    login(session, now)
    return session


# -- before authentication --------------------------------------------------------------------


def test_ping_is_answered_before_authentication(session: Session, now: float) -> None:
    assert send(session, {"type": "ping", "id": 1}, now) == [Send({"type": "pong", "id": 1})]


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "subscribe", "id": "f", "channel": "agent:1"},
        {"type": "unsubscribe", "id": "f", "channel": "agent:1"},
        {"type": "publish", "id": "f", "channel": "agent:1", "payload": 1},
    ],
)
def test_other_frames_before_authentication_are_unauthenticated(
    session: Session, now: float, frame: dict[str, Any]
) -> None:
    error = the_error(send(session, frame, now))

    assert (error["code"], error["id"]) == ("unauthenticated", "f")


def test_malformed_frame_is_a_bad_request(session: Session, now: float) -> None:
    error = the_error(session.receive("{not json", now))

    assert error["code"] == "bad_request"


def test_unknown_frame_type_is_answered_with_its_id(session: Session, now: float) -> None:
    error = the_error(send(session, {"type": "shout", "id": 3}, now))

    assert (error["code"], error["id"]) == ("unknown_type", 3)


def test_new_session_must_authenticate_within_the_auth_timeout(now: float) -> None:
    session = Session("c", JSON, live(auth_timeout_seconds=10), now)

    assert session.next_deadline() == now + 10
    assert session.tick(now + 9.99) == []
    assert session.tick(now + 10) == [Close(CloseCode.AUTH_TIMEOUT, "authentication timeout")]
    assert CloseCode.AUTH_TIMEOUT == 4001


# -- authenticate and admission ---------------------------------------------------------------


def test_authenticate_asks_to_admit_the_tokens_principal(session: Session, now: float) -> None:
    actions = send(session, {"type": "authenticate", "id": 5, "token": token(now)}, now)

    assert len(actions) == 1
    admit = actions[0]
    assert isinstance(admit, Admit)
    assert admit.frame_id == 5
    assert admit.principal.user == "alice"
    assert admit.principal.subscribe == ("agent:*", "conversation:*")
    assert session.phase is Phase.AWAITING_AUTH
    assert session.principal is None


def test_granted_admission_answers_authenticated(session: Session, now: float) -> None:
    [admit] = send(session, {"type": "authenticate", "id": 5, "token": token(now, ttl=60)}, now)
    assert isinstance(admit, Admit)

    actions = session.admitted(admit.principal, True, 5)

    assert actions == [
        Send(
            {
                "type": "authenticated",
                "id": 5,
                "user": "alice",
                "expires_at": int(now + 60) * 1000,
            }
        )
    ]
    assert session.phase is Phase.ACTIVE
    assert session.principal == admit.principal


def test_granted_admission_replaces_the_auth_deadline_by_the_token_expiry(
    session: Session, now: float
) -> None:
    principal = login(session, now, token(now, ttl=60))

    assert session.next_deadline() == principal.expires_at
    assert session.tick(now + 30) == []


def test_refused_admission_is_too_many_connections_then_close_4003(
    session: Session, now: float
) -> None:
    [admit] = send(session, {"type": "authenticate", "id": 5, "token": token(now)}, now)
    assert isinstance(admit, Admit)

    actions = session.admitted(admit.principal, False, 5)

    assert len(actions) == 2
    error = the_error(actions[:1])
    assert (error["code"], error["id"]) == ("too_many_connections", 5)
    assert actions[1] == Close(CloseCode.TOO_MANY_CONNECTIONS, "too many connections")
    assert CloseCode.TOO_MANY_CONNECTIONS == 4003
    assert session.principal is None


@pytest.mark.parametrize("bad", ["garbage", mint_token("other-secret-" + "o" * 32, "alice")])
def test_bad_token_is_auth_failed_and_authentication_may_be_retried(
    session: Session, now: float, bad: str
) -> None:
    error = the_error(send(session, {"type": "authenticate", "id": 1, "token": bad}, now))

    assert (error["code"], error["id"]) == ("auth_failed", 1)
    assert session.phase is Phase.AWAITING_AUTH
    login(session, now + 1, token(now))
    assert session.phase is Phase.ACTIVE


def test_expired_token_is_token_expired(session: Session, now: float) -> None:
    stale = token(now - 120, ttl=60)

    error = the_error(send(session, {"type": "authenticate", "id": 1, "token": stale}, now))

    assert (error["code"], error["id"]) == ("token_expired", 1)


def test_token_at_upgrade_is_verified_into_an_admit_without_frame_id(
    session: Session, now: float
) -> None:
    admit = session.authenticate_at_upgrade(token(now, "bob"))

    assert admit.principal.user == "bob"
    assert admit.frame_id is None


def test_bad_token_at_upgrade_raises_auth_failed(session: Session) -> None:
    with pytest.raises(ProtocolError) as info:
        session.authenticate_at_upgrade("garbage")

    assert info.value.code is ErrorCode.AUTH_FAILED


def test_auth_deadline_still_applies_while_admission_is_pending(
    session: Session, now: float
) -> None:
    send(session, {"type": "authenticate", "token": token(now)}, now)

    assert session.tick(now + 10) == [Close(CloseCode.AUTH_TIMEOUT, "authentication timeout")]


# -- subscribe / unsubscribe ------------------------------------------------------------------


def test_subscribe_starts_a_subscription(active: Session, now: float) -> None:
    actions = send(active, {"type": "subscribe", "id": 2, "channel": "agent:1", "since": 40}, now)

    assert actions == [StartSubscription(AGENT_1, since=40, last=None, frame_id=2)]
    assert active.subscriptions == {"agent:1": AGENT_1}


def test_subscribe_passes_last_through(active: Session, now: float) -> None:
    actions = send(active, {"type": "subscribe", "channel": "agent:1", "last": 5}, now)

    assert actions == [StartSubscription(AGENT_1, since=None, last=5, frame_id=None)]


@pytest.mark.parametrize("channel", ["system", "user:alice"])
def test_system_and_own_user_channel_need_no_pattern(
    active: Session, now: float, channel: str
) -> None:
    actions = subscribe(active, channel, now)

    assert actions == [StartSubscription(parse_channel(channel), None, None, None)]


@pytest.mark.parametrize("channel", ["metrics:cpu", "user:bob"])
def test_subscribe_without_permission_is_forbidden(
    active: Session, now: float, channel: str
) -> None:
    error = the_error(subscribe(active, channel, now, frame_id=9))

    assert (error["code"], error["id"], error["channel"]) == ("forbidden", 9, channel)
    assert active.subscriptions == {}


def test_subscribe_to_an_unconfigured_namespace_is_invalid_channel(now: float) -> None:
    session = Session("c", JSON, live(namespaces={"agent": {}}), now)
    login(session, now, token(now, channels=("*",)))

    error = the_error(subscribe(session, "conversation:1", now, frame_id=9))

    assert (error["code"], error["id"], error["channel"]) == (
        "invalid_channel",
        9,
        "conversation:1",
    )


@pytest.mark.parametrize("channel", ["agent:*", "agent:>", "agent:a.b", "system:x"])
def test_subscribe_to_a_malformed_channel_is_invalid_channel(
    active: Session, now: float, channel: str
) -> None:
    error = the_error(subscribe(active, channel, now, frame_id=9))

    assert (error["code"], error["id"]) == ("invalid_channel", 9)


def test_subscriptions_beyond_the_limit_are_refused(now: float) -> None:
    session = Session("c", JSON, live(subscriptions_per_connection=2), now)
    login(session, now)
    subscribe(session, "agent:1", now)
    subscribe(session, "agent:2", now)

    error = the_error(subscribe(session, "agent:3", now, frame_id=4))

    assert (error["code"], error["id"], error["channel"]) == (
        "too_many_subscriptions",
        4,
        "agent:3",
    )
    assert set(session.subscriptions) == {"agent:1", "agent:2"}


def test_resubscribing_to_the_same_channel_does_not_count_twice(now: float) -> None:
    session = Session("c", JSON, live(subscriptions_per_connection=2), now)
    login(session, now)
    subscribe(session, "agent:1", now)
    subscribe(session, "agent:2", now)

    actions = send(session, {"type": "subscribe", "channel": "agent:1", "last": 3}, now)

    assert actions == [StartSubscription(AGENT_1, None, 3, None)]
    assert len(session.subscriptions) == 2


def test_unsubscribe_stops_the_subscription_with_a_reply(active: Session, now: float) -> None:
    subscribe(active, "agent:1", now)

    actions = send(active, {"type": "unsubscribe", "id": 6, "channel": "agent:1"}, now)

    assert actions == [StopSubscription(AGENT_1, 6, reply=True)]
    assert active.subscriptions == {}


def test_unsubscribe_from_an_unfollowed_channel_is_not_subscribed(
    active: Session, now: float
) -> None:
    error = the_error(send(active, {"type": "unsubscribe", "id": 6, "channel": "agent:1"}, now))

    assert (error["code"], error["id"], error["channel"]) == ("not_subscribed", 6, "agent:1")


def test_unsubscribe_frees_a_subscription_slot(now: float) -> None:
    session = Session("c", JSON, live(subscriptions_per_connection=1), now)
    login(session, now)
    subscribe(session, "agent:1", now)
    send(session, {"type": "unsubscribe", "channel": "agent:1"}, now)

    assert subscribe(session, "agent:2", now) == [
        StartSubscription(Channel("agent", "2"), None, None, None)
    ]


def test_failed_subscription_is_forgotten_and_frees_its_slot(now: float) -> None:
    session = Session("c", JSON, live(subscriptions_per_connection=1), now)
    login(session, now)
    subscribe(session, "agent:1", now)

    session.subscription_failed(AGENT_1)

    assert session.subscriptions == {}
    assert subscribe(session, "agent:2", now) == [
        StartSubscription(Channel("agent", "2"), None, None, None)
    ]


# -- publish ----------------------------------------------------------------------------------


def test_publish_asks_to_publish_the_payload(active: Session, now: float) -> None:
    actions = send(
        active, {"type": "publish", "id": 7, "channel": "agent:1", "payload": {"x": [1]}}, now
    )

    assert actions == [PublishMessage(AGENT_1, {"x": [1]}, 7)]


@pytest.mark.parametrize("channel", ["metrics:cpu", "system", "user:alice"])
def test_publish_without_a_publish_pattern_is_forbidden(
    active: Session, now: float, channel: str
) -> None:
    error = the_error(
        send(active, {"type": "publish", "id": 7, "channel": channel, "payload": 1}, now)
    )

    assert (error["code"], error["id"], error["channel"]) == ("forbidden", 7, channel)


def test_subscribe_permission_does_not_grant_publishing(now: float) -> None:
    session = Session("c", JSON, live(), now)
    login(session, now, token(now, channels=("agent:*",), publish=()))

    error = the_error(send(session, {"type": "publish", "channel": "agent:1", "payload": 1}, now))

    assert error["code"] == "forbidden"


def test_publish_to_an_unconfigured_namespace_is_invalid_channel(now: float) -> None:
    session = Session("c", JSON, live(namespaces={"agent": {}}), now)
    login(session, now, token(now, publish=("*",)))

    error = the_error(
        send(session, {"type": "publish", "id": 1, "channel": "chat:1", "payload": 1}, now)
    )

    assert (error["code"], error["channel"]) == ("invalid_channel", "chat:1")


def test_namespace_max_message_bytes_overrides_the_global_limit_for_publish(now: float) -> None:
    session = Session(
        "c",
        JSON,
        live(namespaces={"agent": {"max_message_bytes": 300}, "conversation": {}}),
        now,
    )
    login(session, now)
    big = "x" * 400

    small_frame = {"type": "publish", "id": 1, "channel": "agent:1", "payload": "x" * 10}
    big_frame = {"type": "publish", "id": 2, "channel": "agent:1", "payload": big}
    elsewhere = {"type": "publish", "id": 3, "channel": "conversation:1", "payload": big}

    assert send(session, small_frame, now) == [PublishMessage(AGENT_1, "x" * 10, 1)]
    error = the_error(send(session, big_frame, now))
    assert (error["code"], error["id"], error["channel"]) == ("message_too_large", 2, "agent:1")
    assert send(session, elsewhere, now) == [PublishMessage(Channel("conversation", "1"), big, 3)]


# -- frame size -------------------------------------------------------------------------------


def test_oversized_frame_is_refused_before_parsing(now: float) -> None:
    session = Session("c", JSON, live(max_message_bytes=256), now)

    error = the_error(session.receive("{" * 257, now))

    assert error["code"] == "message_too_large"
    assert "id" not in error


def test_frame_of_exactly_max_message_bytes_is_parsed(now: float) -> None:
    session = Session("c", JSON, live(max_message_bytes=256), now)
    frame = '{"type":"ping","id":"' + "i" * 100 + '"}'
    padded = frame + " " * (256 - len(frame))

    assert session.receive(padded, now) == [Send({"type": "pong", "id": "i" * 100})]


def test_frame_size_counts_utf8_bytes_not_characters(now: float) -> None:
    session = Session("c", JSON, live(max_message_bytes=256), now)
    text = JSON.encode({"type": "ping", "id": "é" * 128}).decode()
    assert len(text) < 256 < len(text.encode())

    assert the_error(session.receive(text, now))["code"] == "message_too_large"


def test_oversized_binary_frame_is_refused_before_decoding(now: float) -> None:
    session = Session("c", MSGPACK, live(max_message_bytes=256), now)

    assert the_error(session.receive(b"\xc1" * 300, now))["code"] == "message_too_large"


def test_msgpack_session_takes_binary_frames_and_refuses_text(now: float) -> None:
    session = Session("c", MSGPACK, live(), now)

    assert session.receive(MSGPACK.encode({"type": "ping", "id": 1}), now) == [
        Send({"type": "pong", "id": 1})
    ]
    assert the_error(session.receive('{"type":"ping"}', now))["code"] == "bad_request"


# -- rate limit -------------------------------------------------------------------------------


def test_frames_beyond_the_burst_are_dropped_unread_as_rate_limited(now: float) -> None:
    session = Session("c", JSON, live(messages_per_second=2, burst=3), now)

    replies = [send(session, {"type": "ping", "id": i}, now) for i in range(4)]

    assert replies[:3] == [[Send({"type": "pong", "id": i})] for i in range(3)]
    error = the_error(replies[3])
    assert error["code"] == "rate_limited"
    assert "id" not in error


def test_rate_limit_refills_over_time(now: float) -> None:
    session = Session("c", JSON, live(messages_per_second=2, burst=1), now)
    send(session, {"type": "ping"}, now)

    assert the_error(send(session, {"type": "ping"}, now + 0.25))["code"] == "rate_limited"
    assert send(session, {"type": "ping"}, now + 0.75) == [Send({"type": "pong"})]


def test_burst_defaults_to_one_seconds_worth_of_frames(now: float) -> None:
    session = Session("c", JSON, live(messages_per_second=5), now)

    replies = [send(session, {"type": "ping"}, now) for _ in range(6)]

    assert replies[:5] == [[Send({"type": "pong"})]] * 5
    assert the_error(replies[5])["code"] == "rate_limited"


def test_rate_limit_applies_to_authenticated_frames_too(now: float) -> None:
    session = Session("c", JSON, live(messages_per_second=1, burst=2), now)
    login(session, now)
    subscribe(session, "agent:1", now)

    error = the_error(subscribe(session, "agent:2", now, frame_id="s2"))

    assert error["code"] == "rate_limited"
    assert set(session.subscriptions) == {"agent:1"}


def test_first_frame_is_allowed_when_the_rate_is_below_one_per_second(now: float) -> None:
    session = Session("c", JSON, live(messages_per_second=0.5), now)

    assert send(session, {"type": "ping"}, now) == [Send({"type": "pong"})]


def test_malformed_frames_count_against_the_rate_limit(now: float) -> None:
    session = Session("c", JSON, live(messages_per_second=1, burst=2), now)
    session.receive("garbage", now)
    session.receive("garbage", now)

    assert the_error(session.receive("garbage", now))["code"] == "rate_limited"


# -- token expiry and re-authentication -------------------------------------------------------


def test_tick_at_token_expiry_sends_token_expired_then_closes_after_auth_timeout(
    now: float,
) -> None:
    session = Session("c", JSON, live(auth_timeout_seconds=10), now)
    principal = login(session, now, token(now, ttl=60))
    expiry = principal.expires_at

    assert session.tick(expiry - 0.001) == []
    error = the_error(session.tick(expiry))
    assert error["code"] == "token_expired"
    assert session.phase is Phase.EXPIRED
    assert session.next_deadline() == expiry + 10
    assert session.tick(expiry + 9.99) == []
    assert session.tick(expiry + 10) == [Close(CloseCode.AUTH_TIMEOUT, "authentication timeout")]


def test_frames_after_expiry_are_token_expired_but_ping_still_works(now: float) -> None:
    session = Session("c", JSON, live(), now)
    principal = login(session, now, token(now, ttl=60))
    session.tick(principal.expires_at)

    error = the_error(subscribe(session, "agent:1", principal.expires_at + 1, frame_id="x"))

    assert (error["code"], error["id"]) == ("token_expired", "x")
    assert send(session, {"type": "ping"}, principal.expires_at + 1) == [Send({"type": "pong"})]


def test_frame_sent_after_expiry_but_before_tick_is_token_expired_and_starts_the_deadline(
    now: float,
) -> None:
    session = Session("c", JSON, live(auth_timeout_seconds=10), now)
    principal = login(session, now, token(now, ttl=60))
    late = principal.expires_at + 5

    actions = send(session, {"type": "publish", "id": 8, "channel": "agent:1", "payload": 1}, late)

    # The same notice `tick` would have sent (no id, so clients re-authenticate), then
    # the refusal of this frame.
    notice, refusal = (a.frame for a in actions if isinstance(a, Send))
    assert (notice["code"], notice.get("id")) == ("token_expired", None)
    assert (refusal["code"], refusal["id"]) == ("token_expired", 8)
    assert session.phase is Phase.EXPIRED
    assert session.next_deadline() == late + 10


def test_reauthenticating_after_expiry_keeps_subscriptions_and_cancels_the_close(
    now: float,
) -> None:
    session = Session("c", JSON, live(auth_timeout_seconds=10), now)
    principal = login(session, now, token(now, ttl=60))
    subscribe(session, "agent:1", now)
    subscribe(session, "conversation:2", now)
    expiry = principal.expires_at
    session.tick(expiry)

    fresh = token(now, ttl=3600)
    actions = send(session, {"type": "authenticate", "id": "re", "token": fresh}, expiry + 1)

    assert actions == [
        Send(
            {
                "type": "authenticated",
                "id": "re",
                "user": "alice",
                "expires_at": int(now + 3600) * 1000,
            }
        )
    ]
    assert session.phase is Phase.ACTIVE
    assert set(session.subscriptions) == {"agent:1", "conversation:2"}
    assert session.next_deadline() == int(now + 3600)
    assert session.tick(expiry + 10) == []


def test_reauthenticating_while_active_extends_the_session_without_admission(
    active: Session, now: float
) -> None:
    subscribe(active, "agent:1", now)

    actions = send(active, {"type": "authenticate", "token": token(now, ttl=7200)}, now + 1)

    assert len(actions) == 1
    assert isinstance(actions[0], Send)
    assert actions[0].frame["type"] == "authenticated"
    assert active.principal is not None
    assert active.principal.expires_at == int(now + 7200)
    assert set(active.subscriptions) == {"agent:1"}


def test_token_for_another_user_is_auth_failed_and_changes_nothing(
    active: Session, now: float
) -> None:
    before = active.principal

    error = the_error(
        send(active, {"type": "authenticate", "id": 4, "token": token(now, "mallory")}, now)
    )

    assert (error["code"], error["id"]) == ("auth_failed", 4)
    assert active.principal == before


def test_new_token_that_drops_a_channel_stops_that_subscription(
    active: Session, now: float
) -> None:
    subscribe(active, "agent:1", now)
    subscribe(active, "conversation:2", now)
    narrower = token(now, channels=("conversation:*",))

    actions = send(active, {"type": "authenticate", "id": "n", "token": narrower}, now)

    assert actions[0] == StopSubscription(AGENT_1, None, reply=False)
    error = the_error(actions[1:2])
    assert (error["code"], error["channel"]) == ("forbidden", "agent:1")
    assert isinstance(actions[2], Send)
    assert actions[2].frame["type"] == "authenticated"
    assert len(actions) == 3
    assert set(active.subscriptions) == {"conversation:2"}


def test_next_deadline_follows_the_session_through_its_phases(now: float) -> None:
    session = Session("c", JSON, live(auth_timeout_seconds=10), now)
    assert session.next_deadline() == now + 10

    principal = login(session, now, token(now, ttl=60))
    assert session.next_deadline() == principal.expires_at

    session.tick(principal.expires_at)
    assert session.next_deadline() == principal.expires_at + 10


# -- live configuration -----------------------------------------------------------------------


def test_replaced_subscription_limit_applies_to_an_existing_session(now: float) -> None:
    settings = live(subscriptions_per_connection=5)
    session = Session("c", JSON, settings, now)
    login(session, now)
    subscribe(session, "agent:1", now)
    subscribe(session, "agent:2", now)

    settings.replace(config(subscriptions_per_connection=2))

    assert the_error(subscribe(session, "agent:3", now))["code"] == "too_many_subscriptions"


def test_replaced_max_message_bytes_applies_to_an_existing_session(now: float) -> None:
    settings = live()
    session = Session("c", JSON, settings, now)
    frame = '{"type":"ping","id":1}' + " " * 300
    assert session.receive(frame, now) == [Send({"type": "pong", "id": 1})]

    settings.replace(config(max_message_bytes=256))

    assert the_error(session.receive(frame, now))["code"] == "message_too_large"


def test_replaced_rate_limit_applies_to_an_existing_session(now: float) -> None:
    settings = live(messages_per_second=100)
    session = Session("c", JSON, settings, now)
    send(session, {"type": "ping"}, now)

    settings.replace(config(messages_per_second=1, burst=1))

    assert send(session, {"type": "ping"}, now) == [Send({"type": "pong"})]
    assert the_error(send(session, {"type": "ping"}, now))["code"] == "rate_limited"


def test_replaced_namespaces_apply_to_an_existing_session(now: float) -> None:
    settings = live()
    session = Session("c", JSON, settings, now)
    login(session, now)

    settings.replace(config(namespaces={"conversation": {}}))

    assert the_error(subscribe(session, "agent:1", now))["code"] == "invalid_channel"


@pytest.mark.parametrize(
    ("audience", "allowed"), [("token", False), ("authenticated", True), ("nobody", False)]
)
def test_namespace_permissions_decide_who_may_publish(now: float, audience: str, allowed: bool):
    config = GatewayConfig(
        auth=AuthSettings(secret=SECRET),
        namespaces={"tasks": NamespaceSettings(history_messages=0, publish=audience)},
    )
    session = Session("c", JSON, LiveSettings(config), now)
    login(session, now, token(now, ttl=60))
    actions = send(session, {"type": "publish", "channel": "tasks:1", "payload": 1}, now)
    assert isinstance(actions[0], PublishMessage) is allowed


def test_namespace_closed_to_subscribers_refuses_even_a_matching_token(now: float):
    config = GatewayConfig(
        auth=AuthSettings(secret=SECRET),
        namespaces={"tasks": NamespaceSettings(subscribe="nobody")},
    )
    session = Session("c", JSON, LiveSettings(config), now)
    login(session, now, token(now, ttl=60, channels=("tasks:*",)))
    error = the_error(send(session, {"type": "subscribe", "channel": "tasks:1"}, now))
    assert error["code"] == "forbidden"
