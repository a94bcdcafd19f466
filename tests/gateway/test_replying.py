"""Replies: a connection's replies leave in the order of its frames, publishes' after acks."""

from __future__ import annotations

import asyncio

from neurelay.errors import ProtocolError
from neurelay.gateway.replying import Replies
from neurelay.protocol.channels import parse_channel
from neurelay.protocol.codes import ErrorCode

CHANNEL = parse_channel("agent:a")


def test_a_reply_with_nothing_in_flight_is_sent_at_once() -> None:
    sent: list[dict[str, object]] = []
    Replies(sent.append).send({"type": "pong"})
    assert sent == [{"type": "pong"}]


def test_replies_wait_for_the_acks_before_them_and_leave_in_the_frames_order() -> None:
    sent: list[dict[str, object]] = []
    replies = Replies(sent.append)
    first = replies.expect(CHANNEL, "a")
    second = replies.expect(CHANNEL, "b")
    replies.send({"type": "pong", "id": "p"})
    third = replies.expect(CHANNEL, "c")
    third.published(9, False)
    second.refused(ProtocolError(ErrorCode.UNAVAILABLE, "down", frame_id="b"))
    assert sent == []  # the first publish has no ack yet
    first.published(7, True)
    assert [(f["type"], f.get("id")) for f in sent] == [
        ("published", "a"),
        ("error", "b"),
        ("pong", "p"),
        ("published", "c"),
    ]
    assert sent[0]["duplicate"] is True
    assert replies.held == 0


async def test_waiting_for_room_returns_once_enough_replies_are_sent() -> None:
    replies = Replies(lambda frame: None)
    awaited = [replies.expect(CHANNEL, n) for n in range(3)]
    room = asyncio.create_task(replies.below(2))
    drained = asyncio.create_task(replies.below(1))
    await asyncio.sleep(0)
    awaited[0].published(1, False)
    awaited[1].published(2, False)
    await room
    assert not drained.done()
    awaited[2].published(3, False)
    await drained
