"""How replicas take each other for dead: a death is noticed within the presence TTL.

A replica whose own event loop was starved has not read the others' beats that
arrived meanwhile; it takes nobody for dead until it has caught up.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from neurelay.gateway.coordinating import DEAD, LOOK, LOOKS_PER_BEAT


def test_a_dead_replica_is_noticed_within_the_ttl_of_its_last_beat() -> None:
    # Silence is looked at every LOOK: the first look after DEAD of silence sees it.
    assert DEAD + LOOK <= 1.0


def test_a_beat_half_the_ttl_late_is_not_taken_for_death() -> None:
    beat_interval = LOOK * LOOKS_PER_BEAT
    assert beat_interval <= 1 / 3
    assert DEAD - beat_interval >= 0.5


NAMESPACES = {"conversation": {"presence": True, "join_leave": True}}
PRESENCE = {"ttl_seconds": 1.5, "request_timeout_seconds": 5.0}


async def _next_notice(client: Any) -> dict[str, Any]:
    while (frame := await client.recv(30)).get("type") not in ("join", "leave"):
        pass
    return frame


@pytest.mark.timeout(120)
async def test_a_replica_whose_loop_was_starved_takes_no_live_replica_for_dead(
    make_config: Any, gateway_factory: Any, gateway_process: Any, connect: Any, token: Any
) -> None:
    other = await gateway_process("other", namespaces=NAMESPACES, presence=PRESENCE).start()
    starved = await gateway_factory(make_config(namespaces=NAMESPACES, presence=PRESENCE))
    watcher = await connect(starved.ws_url, token(user="watcher"))
    await watcher.request({"type": "subscribe", "channel": "conversation:room"})
    member = await connect(other.ws_url, token(user="member"))
    await member.request({"type": "subscribe", "channel": "conversation:room"})
    assert (await _next_notice(watcher))["user"] == "member"  # the starved one knows it

    # The in-process replica's loop is blocked for twice the TTL: it neither reads the
    # other's beats nor looks, while the other keeps beating (and takes it for dead).
    time.sleep(2 * PRESENCE["ttl_seconds"])  # noqa: ASYNC251 - the starvation itself
    await asyncio.sleep(PRESENCE["ttl_seconds"])  # its looks go on, and would find deaths
    sentinel = await connect(other.ws_url, token(user="sentinel"))
    await sentinel.request({"type": "subscribe", "channel": "conversation:room"})
    first = await _next_notice(watcher)

    assert (first["type"], first["user"]) == ("join", "sentinel")
