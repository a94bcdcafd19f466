"""A subscription's cursor: what it asks for on (re)subscribing, which messages are new."""

from __future__ import annotations

from neurelay.client.cursor import Cursor
from neurelay.protocol.server_frames import Message, Subscribed


def _message(seq: int) -> Message:
    return Message("agent:1", seq, seq, None, 0)


def test_first_request_asks_for_what_the_caller_asked_for():
    assert Cursor("agent:1", None, None).request() == {"type": "subscribe", "channel": "agent:1"}
    assert Cursor("agent:1", 5, None).request()["since"] == 5
    assert Cursor("agent:1", None, 3).request()["last"] == 3


def test_after_a_reconnect_a_plain_subscription_resumes_after_the_last_delivered_seq():
    cursor = Cursor("agent:1", None, None)
    cursor.acknowledge(Subscribed("agent:1", 10, True))
    assert cursor.request()["since"] == 10  # nothing delivered yet: from the confirmation
    assert cursor.admit(_message(12))
    assert cursor.request()["since"] == 12


def test_history_not_yet_delivered_is_asked_for_again_after_a_reconnect():
    cursor = Cursor("agent:1", None, 5)
    cursor.acknowledge(Subscribed("agent:1", 20, True))
    assert cursor.admit(_message(16))  # the connection drops in the middle of the history
    assert cursor.request()["since"] == 16


def test_messages_at_or_below_the_last_seq_are_dropped_and_counted():
    cursor = Cursor("agent:1", 3, None)
    assert [cursor.admit(_message(seq)) for seq in (2, 3, 4, 4, 5)] == [
        False,
        False,
        True,
        False,
        True,
    ]
    assert (cursor.last_seq, cursor.duplicates) == (5, 3)


def test_messages_without_seq_always_pass():
    cursor = Cursor("metrics:1", None, None)
    assert cursor.admit(_message(0))
    assert cursor.admit(_message(0))
    assert cursor.recovered


def test_recovered_follows_the_latest_confirmation():
    cursor = Cursor("agent:1", 1, None)
    cursor.acknowledge(Subscribed("agent:1", 9, False))
    assert not cursor.recovered
