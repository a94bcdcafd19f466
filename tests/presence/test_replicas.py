"""Presence, join/leave and the server API on three gateway processes over one NATS."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import nats
import pytest

from neurelay.gateway.admission import user_key
from neurelay.protocol.codecs import JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL
from neurelay.protocol.codes import CloseCode
from tests.conftest import SECRET
from tests.support.processes import GatewayProcess

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

TTL = 1.5
NAMESPACES = {
    "conversation": {"history_messages": 10, "presence": True, "join_leave": True},
    "agent": {"history_messages": 10, "presence": True},
    "metrics": {"history_messages": 0},
    "system": {"history_messages": 10},
}


async def three(make: Callable[..., GatewayProcess], **sections: Any) -> list[GatewayProcess]:
    sections = {
        "namespaces": NAMESPACES,
        "presence": {"ttl_seconds": TTL, "request_timeout_seconds": 5.0},
        **sections,
    }
    replicas = [make(name, **sections) for name in ("a", "b", "c")]
    for replica in replicas:
        replica.spawn()
    for replica in replicas:
        await replica.wait_ready()
    # Each replica announces itself when ready; give the announcements a moment to land.
    await asyncio.sleep(0.3)
    return replicas


async def api(
    method: str, replica: GatewayProcess, path: str, token: str, body: Any = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, replica.http_url + path, headers=headers, json=body) as response,
    ):
        return response.status, await response.json()


async def next_of(client: Any, kind: str, timeout: float = 15.0) -> dict[str, Any]:
    """The next frame of `kind`, skipping others (messages, other notices)."""
    while True:
        frame: dict[str, Any] = await client.recv(timeout)
        if frame["type"] == kind:
            return frame


def people(clients: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return sorted(((c["user"], c.get("info")) for c in clients), key=repr)


async def test_presence_and_stats_agree_on_every_replica(gateway_process, connect, token):
    replicas = await three(gateway_process)
    for n, replica in enumerate(replicas):
        member = await connect(replica.ws_url, token(user=f"u{n}", info={"name": f"User {n}"}))
        await member.request({"type": "subscribe", "channel": "conversation:room"})
    second = await connect(replicas[2].ws_url, token(user="u0"))  # u0 twice, on two replicas
    await second.request({"type": "subscribe", "channel": "conversation:room"})
    admin = token(user="backend", admin=True)
    expected = people(
        [
            {"user": "u0", "info": {"name": "User 0"}},
            {"user": "u0"},
            {"user": "u1", "info": {"name": "User 1"}},
            {"user": "u2", "info": {"name": "User 2"}},
        ]
    )

    for replica in replicas:
        asker = await connect(replica.ws_url, token(user="asker"))
        listed = await asker.request({"type": "presence", "channel": "conversation:room"})
        stats = await asker.request({"type": "presence_stats", "channel": "conversation:room"})
        status, body = await api(
            "GET", replica, "/api/v1/channels/conversation:room/presence", admin
        )
        _, counted = await api(
            "GET", replica, "/api/v1/channels/conversation:room/presence/stats", admin
        )

        assert people(listed["clients"]) == expected
        assert "truncated" not in listed
        assert len({c["connection"] for c in listed["clients"]}) == 4
        assert (stats["users"], stats["connections"]) == (3, 4)
        assert status == 200
        assert people(body["clients"]) == expected
        assert counted == {"channel": "conversation:room", "users": 3, "connections": 4}


async def test_channels_are_listed_with_subscribers_summed_over_replicas(
    gateway_process, connect, token
):
    replicas = await three(gateway_process)
    for n, replica in enumerate(replicas):
        client = await connect(replica.ws_url, token(user=f"u{n}"))
        await client.request({"type": "subscribe", "channel": "agent:one"})
        if n:
            await client.request({"type": "subscribe", "channel": "conversation:two"})

    status, body = await api(
        "GET", replicas[0], "/api/v1/channels?namespace=agent", token(user="ops", admin=True)
    )
    _, everything = await api("GET", replicas[1], "/api/v1/channels", token(admin=True))

    assert status == 200
    assert body == {"channels": [{"channel": "agent:one", "subscribers": 3}]}
    assert everything["channels"] == [
        {"channel": "agent:one", "subscribers": 3},
        {"channel": "conversation:two", "subscribers": 2},
    ]


async def test_join_and_leave_reach_other_replicas_but_not_the_connection_itself(
    gateway_process, connect, token
):
    replicas = await three(gateway_process)
    watcher = await connect(replicas[0].ws_url, token(user="watcher"))
    await watcher.request({"type": "subscribe", "channel": "conversation:room"})
    joiner = await connect(replicas[1].ws_url, token(user="bob", info={"device": "phone"}))

    await joiner.request({"type": "subscribe", "channel": "conversation:room"})
    joined = await next_of(watcher, "join")
    await joiner.request({"type": "unsubscribe", "channel": "conversation:room"})
    left = await next_of(watcher, "leave")
    await joiner.request({"type": "subscribe", "channel": "conversation:room"})
    await next_of(watcher, "join")
    await joiner.ws.close()
    gone = await next_of(watcher, "leave")

    assert joined == {
        "type": "join",
        "channel": "conversation:room",
        "user": "bob",
        "connection": joined["connection"],
        "info": {"device": "phone"},
    }
    assert left == {**joined, "type": "leave"}
    assert (gone["user"], gone["type"]) == ("bob", "leave")
    assert not [f for f in joiner.unread if f["type"] == "join" and f["user"] == "bob"]


async def test_a_burst_of_arrivals_and_departures_reaches_every_watcher_exactly_once(
    gateway_process, connect, token
):
    replicas = await three(gateway_process)
    watchers = []
    for n, replica in enumerate(replicas):
        watcher = await connect(replica.ws_url, token(user=f"watcher{n}"))
        await watcher.request({"type": "subscribe", "channel": "conversation:burst"})
        watchers.append(watcher)
    await asyncio.sleep(0.3)  # the watchers' own joins have gone by
    for watcher in watchers:
        await watcher.request({"type": "ping"})
        watcher.unread.clear()
    crowd = [
        await connect(replicas[n % 3].ws_url, token(user=f"u{n}", info={"n": n})) for n in range(24)
    ]

    # Sent at once, so that each replica has several arrivals of one channel in one pass.
    await asyncio.gather(
        *(c.send({"type": "subscribe", "channel": "conversation:burst"}) for c in crowd)
    )
    joins = [[await next_of(w, "join") for _ in crowd] for w in watchers]
    await asyncio.gather(*(c.ws.close() for c in crowd))
    leaves = [[await next_of(w, "leave") for _ in crowd] for w in watchers]
    for watcher in watchers:
        await watcher.request({"type": "ping"})  # anything duplicated would be read by now

    everyone = sorted((f"u{n}", {"n": n}) for n in range(24))
    for got_joins, got_leaves, watcher in zip(joins, leaves, watchers, strict=True):
        assert sorted((f["user"], f["info"]) for f in got_joins) == everyone
        assert sorted((f["user"], f["info"]) for f in got_leaves) == everyone
        assert len({f["connection"] for f in got_joins}) == 24
        assert {f["connection"] for f in got_leaves} == {f["connection"] for f in got_joins}
        assert [f for f in watcher.unread if f["type"] in ("join", "leave")] == []


async def test_a_connection_never_receives_its_own_join(gateway_process, connect, token):
    replicas = await three(gateway_process)
    alone = await connect(replicas[0].ws_url, token(user="alice"))
    await alone.request({"type": "subscribe", "channel": "conversation:solo"})
    other = await connect(replicas[1].ws_url, token(user="bob"))
    await other.request({"type": "subscribe", "channel": "conversation:solo"})

    # The join of bob arrives; alice's own join would have come before it.
    first = await next_of(alone, "join")
    await alone.request({"type": "ping"})

    assert first["user"] == "bob"
    assert [f["user"] for f in alone.unread if f["type"] == "join"] == []


async def test_namespace_without_join_leave_sends_no_notices(gateway_process, connect, token):
    replicas = await three(gateway_process)
    watcher = await connect(replicas[0].ws_url, token(user="watcher"))
    await watcher.request({"type": "subscribe", "channel": "agent:quiet"})
    joiner = await connect(replicas[1].ws_url, token(user="bob"))
    await joiner.request({"type": "subscribe", "channel": "agent:quiet"})
    publisher = await connect(replicas[1].ws_url, token(user="svc"))
    await publisher.request({"type": "publish", "channel": "agent:quiet", "payload": "after"})

    frame = await watcher.recv()

    assert (frame["type"], frame["payload"]) == ("message", "after")


async def test_members_of_a_killed_replica_leave_within_the_ttl(gateway_process, connect, token):
    replicas = await three(gateway_process)
    watcher = await connect(replicas[0].ws_url, token(user="watcher"))
    await watcher.request({"type": "subscribe", "channel": "conversation:room"})
    doomed = await connect(replicas[2].ws_url, token(user="carol"))
    await doomed.request({"type": "subscribe", "channel": "conversation:room"})
    await next_of(watcher, "join")

    killed_at = time.monotonic()
    replicas[2].kill()
    left = await next_of(watcher, "leave", timeout=TTL * 10)
    elapsed = time.monotonic() - killed_at
    asker = await connect(replicas[1].ws_url, token(user="asker"))
    listed = await asker.request({"type": "presence", "channel": "conversation:room"})

    assert left["user"] == "carol"
    # Generous bound: the TTL plus one announcement interval and scheduling slack.
    assert elapsed < TTL * 5
    assert people(listed["clients"]) == [("watcher", None)]


async def test_watcher_subscribed_after_the_join_still_hears_a_dead_replica_leave(
    gateway_process, connect, token
):
    replicas = await three(gateway_process)
    doomed = await connect(replicas[2].ws_url, token(user="carol"))
    await doomed.request({"type": "subscribe", "channel": "conversation:late"})
    watcher = await connect(replicas[0].ws_url, token(user="watcher"))
    await watcher.request({"type": "subscribe", "channel": "conversation:late"})
    await watcher.request({"type": "presence", "channel": "conversation:late"})
    await asyncio.sleep(0.5)  # the replica learns the channel's members in the background

    replicas[2].kill()
    left = await next_of(watcher, "leave", timeout=TTL * 10)

    assert left["user"] == "carol"


async def test_a_member_who_left_while_the_replica_asked_who_was_there_leaves_once(
    gateway_process, connect, token, shared_nats
):
    # A TTL long enough that no replica is taken for dead while `asker_c` is stopped.
    replicas = await three(gateway_process, presence={"ttl_seconds": 6.0})
    watcher_a, member_b, asker_c = replicas
    mover = await connect(member_b.ws_url, token(user="mover"))
    stayer = await connect(member_b.ws_url, token(user="stayer"))
    for client in (mover, stayer):
        await client.request({"type": "subscribe", "channel": "conversation:asked"})
    answers = asyncio.Queue[bytes]()
    nc = await nats.connect(shared_nats.url)

    async def on_answer(msg: Any) -> None:
        if b'"members"' in msg.data and b'"mover"' in msg.data:
            answers.put_nowait(msg.data)

    await nc.subscribe("_INBOX.>", cb=on_answer)
    try:
        # Replica a's question about the channel stays open while c, stopped, cannot answer.
        asker_c.signal(signal.SIGSTOP)
        watcher = await connect(watcher_a.ws_url, token(user="watcher"))
        await watcher.request({"type": "subscribe", "channel": "conversation:asked"})
        await asyncio.wait_for(answers.get(), 15)  # b's answer, listing the mover, is sent
        await mover.request({"type": "unsubscribe", "channel": "conversation:asked"})
        left = [await next_of(watcher, "leave")]  # the leave is read before the answer
        asker_c.signal(signal.SIGCONT)
        await watcher.request({"type": "presence", "channel": "conversation:asked"})
    finally:
        asker_c.signal(signal.SIGCONT)
        await nc.close()

    member_b.kill()
    while left[-1]["user"] != "stayer":
        left.append(await next_of(watcher, "leave", timeout=60))
    await watcher.request({"type": "ping"})  # whatever was sent with the leaves is read now
    left.extend(frame for frame in watcher.unread if frame["type"] == "leave")

    assert sorted(frame["user"] for frame in left) == ["mover", "stayer"]


async def test_disconnect_closes_the_users_connections_on_every_replica(
    gateway_process, connect, token
):
    replicas = await three(gateway_process)
    victims = [await connect(r.ws_url, token(user="mallory")) for r in replicas]
    bystander = await connect(replicas[1].ws_url, token(user="innocent"))

    status, body = await api(
        "POST", replicas[0], "/api/v1/users/mallory/disconnect", token(user="ops", admin=True)
    )
    codes = [await victim.close_code() for victim in victims]

    assert status == 200
    assert body == {"user": "mallory", "connections": 3}
    assert codes == [CloseCode.DISCONNECTED] * 3
    assert (await bystander.request({"type": "ping"}))["type"] == "pong"


async def test_revoked_token_is_closed_everywhere_and_refused_on_every_replica(
    gateway_process, connect, token
):
    replicas = await three(gateway_process)
    stolen = token(user="mallory", now=time.time() - 60)
    victims = [await connect(r.ws_url, stolen) for r in replicas[:2]]
    cut_off = int((time.time() - 30) * 1000)

    status, body = await api(
        "POST",
        replicas[2],
        "/api/v1/users/mallory/revoke",
        token(user="ops", admin=True),
        {"issued_before": cut_off},
    )
    codes = [await victim.close_code() for victim in victims]

    assert status == 200
    assert body == {"user": "mallory", "issued_before": cut_off, "connections": 2}
    assert codes == [CloseCode.TOKEN_REVOKED] * 2
    async with aiohttp.ClientSession() as http:
        for replica in replicas:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(replica.ws_url + "?token=" + stolen)
            assert refused.value.status == 401
            client = await connect(replica.ws_url)
            reply = await client.request({"type": "authenticate", "token": stolen})
            assert reply["code"] == "auth_failed"
            fresh = await connect(replica.ws_url, token(user="mallory"))
            assert (await fresh.request({"type": "ping"}))["type"] == "pong"
            await fresh.ws.close()


async def test_revocation_seen_only_in_the_table_still_closes_open_connections(
    gateway_process, connect, token, shared_nats, prefix
):
    """The replica that stored a revocation may die before broadcasting it: the table suffices."""
    replicas = await three(gateway_process)
    stolen = token(user="mallory", now=time.time() - 60)
    victims = [await connect(r.ws_url, stolen) for r in replicas]
    bystander = await connect(replicas[1].ws_url, token(user="innocent"))
    renewed = await connect(replicas[2].ws_url, token(user="mallory"))
    cut_off = int((time.time() - 30) * 1000)

    # Stored as a replica stores it, and no `revoke` command sent to anyone.
    nc = await nats.connect(shared_nats.url)
    try:
        table = await nc.jetstream().key_value(f"{prefix}_revocations")
        await table.put(
            user_key("mallory"), json.dumps({"user": "mallory", "before": cut_off}).encode()
        )
    finally:
        await nc.close()
    codes = [await victim.close_code() for victim in victims]

    assert codes == [CloseCode.TOKEN_REVOKED] * 3
    assert (await bystander.request({"type": "ping"}))["type"] == "pong"
    assert (await renewed.request({"type": "ping"}))["type"] == "pong"


async def test_revocation_reaches_a_replica_started_later(gateway_process, connect, token):
    replicas = await three(gateway_process)
    stolen = token(user="mallory", now=time.time() - 60)
    await api(
        "POST",
        replicas[0],
        "/api/v1/users/mallory/revoke",
        token(admin=True),
        {"issued_before": int(time.time() * 1000)},
    )
    late = await gateway_process("late", namespaces=NAMESPACES).start()

    client = await connect(late.ws_url)
    reply = await client.request({"type": "authenticate", "token": stolen})

    assert reply["code"] == "auth_failed"


async def test_renewing_with_a_revoked_token_is_refused(gateway_process, connect, token):
    replicas = await three(gateway_process)
    client = await connect(replicas[0].ws_url, token(user="mallory"))
    old = token(user="mallory", now=time.time() - 120)
    await api(
        "POST",
        replicas[1],
        "/api/v1/users/mallory/revoke",
        token(admin=True),
        {"issued_before": int((time.time() - 60) * 1000)},
    )

    reply = await client.request({"type": "authenticate", "token": old})

    assert reply["code"] == "auth_failed"


async def test_server_unsubscribe_ends_the_users_subscriptions_on_every_replica(
    gateway_process, connect, token
):
    replicas = await three(gateway_process)
    clients = [await connect(r.ws_url, token(user="bob")) for r in replicas[:2]]
    for client in clients:
        await client.request({"type": "subscribe", "channel": "agent:x"})
        await client.request({"type": "subscribe", "channel": "agent:y"})

    status, body = await api(
        "POST",
        replicas[2],
        "/api/v1/users/bob/unsubscribe",
        token(admin=True),
        {"channel": "agent:x"},
    )
    notices = [await next_of(client, "unsubscribed") for client in clients]
    publisher = await connect(replicas[2].ws_url, token(user="svc"))
    await publisher.request({"type": "publish", "channel": "agent:x", "payload": "gone"})
    await publisher.request({"type": "publish", "channel": "agent:y", "payload": "kept"})
    delivered = [await next_of(client, "message") for client in clients]

    assert status == 200
    assert body == {"user": "bob", "channel": "agent:x", "connections": 2}
    assert notices == [{"type": "unsubscribed", "channel": "agent:x"}] * 2
    assert [m["payload"] for m in delivered] == ["kept", "kept"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/channels/agent:x/presence", None),
        ("GET", "/api/v1/channels/agent:x/presence/stats", None),
        ("GET", "/api/v1/channels", None),
        ("POST", "/api/v1/users/bob/disconnect", None),
        ("POST", "/api/v1/users/bob/revoke", {"issued_before": 1}),
        ("POST", "/api/v1/users/bob/unsubscribe", {"channel": "agent:x"}),
    ],
)
async def test_server_api_refuses_tokens_without_the_admin_claim(
    gateway_process, connect, token, method, path, body
):
    replica = await gateway_process("a", namespaces=NAMESPACES).start()
    victim = await connect(replica.ws_url, token(user="bob"))

    status, answer = await api(method, replica, path, token(user="bob"), body)
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, replica.http_url + path, json=body) as anonymous,
    ):
        anonymous_status = anonymous.status

    assert (status, answer["code"]) == (403, "forbidden")
    assert anonymous_status == 401
    assert (await victim.request({"type": "ping"}))["type"] == "pong"


async def test_presence_is_refused_where_the_namespace_has_it_off(gateway_process, connect, token):
    replica = await gateway_process("a", namespaces=NAMESPACES).start()
    client = await connect(replica.ws_url, token())

    reply = await client.request({"type": "presence", "channel": "metrics:cpu"})
    stats = await client.request({"type": "presence_stats", "channel": "metrics:cpu"})
    status, body = await api(
        "GET", replica, "/api/v1/channels/metrics:cpu/presence", token(admin=True)
    )

    assert (reply["type"], reply["code"], reply["channel"]) == (
        "error",
        "presence_disabled",
        "metrics:cpu",
    )
    assert stats["code"] == "presence_disabled"
    assert (status, body["code"]) == (409, "presence_disabled")


async def test_presence_needs_the_right_to_subscribe(gateway_process, connect, token):
    replica = await gateway_process("a", namespaces=NAMESPACES).start()
    client = await connect(replica.ws_url, token(channels=("agent:*",)))

    reply = await client.request({"type": "presence", "channel": "conversation:secret"})

    assert reply["code"] == "forbidden"


async def test_presence_beyond_the_cap_lists_the_first_entries_in_order_and_says_truncated(
    gateway_process, connect, token
):
    replicas = await three(gateway_process, presence={"ttl_seconds": TTL, "max_clients": 2})
    # u2 first, on the first replica: the cap keeps u0 and u1 (user order), not the oldest.
    for n, replica in zip((2, 1, 0), replicas, strict=True):
        client = await connect(replica.ws_url, token(user=f"u{n}", info={"n": n}))
        await client.request({"type": "subscribe", "channel": "agent:crowd"})
    admin = token(user="backend", admin=True)

    for n, replica in enumerate(replicas):
        for subprotocol in (JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL):
            asker = await connect(replica.ws_url, token(user=f"asker{n}"), subprotocol=subprotocol)
            listed = await asker.request({"type": "presence", "channel": "agent:crowd", "id": 9})
            stats = await asker.request({"type": "presence_stats", "channel": "agent:crowd"})

            assert [(c["user"], c["info"]) for c in listed["clients"]] == [
                ("u0", {"n": 0}),
                ("u1", {"n": 1}),
            ]
            assert (listed["truncated"], listed["id"], listed["channel"]) == (
                True,
                9,
                "agent:crowd",
            )
            assert stats["connections"] == 3
        status, body = await api("GET", replica, "/api/v1/channels/agent:crowd/presence", admin)
        assert status == 200
        assert [c["user"] for c in body["clients"]] == ["u0", "u1"]
        assert body["truncated"] is True


async def test_every_new_frame_works_in_messagepack(gateway_process, connect, token):
    replicas = await three(gateway_process)
    watcher = await connect(
        replicas[0].ws_url, token(user="watcher"), subprotocol=MSGPACK_SUBPROTOCOL
    )
    await watcher.request({"type": "subscribe", "channel": "conversation:mp"})
    joiner = await connect(
        replicas[1].ws_url, token(user="bob", info={"n": 1}), subprotocol=MSGPACK_SUBPROTOCOL
    )
    await joiner.request({"type": "subscribe", "channel": "conversation:mp"})

    joined = await next_of(watcher, "join")
    listed = await watcher.request({"type": "presence", "channel": "conversation:mp"})
    stats = await watcher.request({"type": "presence_stats", "channel": "conversation:mp"})
    disabled = await watcher.request({"type": "presence", "channel": "metrics:m"})
    await joiner.request({"type": "unsubscribe", "channel": "conversation:mp"})
    left = await next_of(watcher, "leave")

    assert (joined["user"], joined["info"]) == ("bob", {"n": 1})
    assert people(listed["clients"]) == people(
        [{"user": "bob", "info": {"n": 1}}, {"user": "watcher"}]
    )
    assert (stats["users"], stats["connections"]) == (2, 2)
    assert disabled["code"] == "presence_disabled"
    assert left["connection"] == joined["connection"]


async def test_members_leave_while_nats_is_gone_and_join_again_when_it_returns(
    tmp_path, own_nats, prefix, connect, token
):
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    config = {
        "nats": {"servers": [own_nats.url], "subject_prefix": prefix},
        "auth": {"secret_file": str(secret_file)},
        "namespaces": NAMESPACES,
        "presence": {"ttl_seconds": TTL},
    }
    replicas = [GatewayProcess(tmp_path, name, json.loads(json.dumps(config))) for name in "ab"]
    try:
        for replica in replicas:
            await replica.start()
        watcher = await connect(replicas[0].ws_url, token(user="watcher"))
        await watcher.request({"type": "subscribe", "channel": "conversation:outage"})
        member = await connect(replicas[1].ws_url, token(user="bob"))
        await member.request({"type": "subscribe", "channel": "conversation:outage"})
        await next_of(watcher, "join")

        own_nats.stop()
        left = await next_of(watcher, "leave", timeout=TTL * 10)
        own_nats.start()
        back = await next_of(watcher, "join", timeout=30)
        bystander = await watcher.request({"type": "ping"})
    finally:
        for replica in replicas:
            replica.stop()

    assert (left["user"], back["user"]) == ("bob", "bob")
    assert back["connection"] == left["connection"]
    assert bystander["type"] == "pong"
