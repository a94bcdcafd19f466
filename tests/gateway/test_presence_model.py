"""Presence without I/O: the local table, the roster, join/leave notices, gathering answers."""

from __future__ import annotations

import msgpack
import orjson
import pytest

from neurelay.errors import ProtocolError
from neurelay.gateway.gathering import (
    PART_HEADER,
    REPLICA_HEADER,
    Gathering,
    Peers,
    merge_channels,
    merge_stats,
    split,
)
from neurelay.gateway.presence import (
    Listing,
    LocalPresence,
    Member,
    Roster,
    decode_events,
    encode_events,
    order_key,
    user_digest,
)


def member(user: str, connection: str, replica: str = "r1", info: dict | None = None) -> Member:
    return Member(user, connection, replica, info)


def listed(table: LocalPresence, channel: str, limit: int = 10, binary: bool = False) -> Listing:
    query = {"q": "presence", "channel": channel, "limit": limit, "binary": binary}
    answer = table.answer(query)
    assert isinstance(answer, bytes)
    return Listing.merge([answer], limit)


def test_local_presence_answers_who_is_subscribed_with_their_info_in_order() -> None:
    table = LocalPresence()
    table.add("conversation:1", member("bob", "c2"))
    table.add("conversation:1", member("alice", "c1", info={"name": "Alice"}))
    table.add("conversation:2", member("bob", "c2"))

    listing = listed(table, "conversation:1")

    assert [orjson.loads(entry) for entry in listing.entries] == [
        {"user": "alice", "connection": "c1", "info": {"name": "Alice"}},
        {"user": "bob", "connection": "c2"},
    ]
    assert not listing.truncated
    binary = listed(table, "conversation:1", binary=True)
    assert [msgpack.unpackb(entry) for entry in binary.entries] == [
        orjson.loads(entry) for entry in listing.entries
    ]


def test_local_presence_caps_its_answer_and_says_truncated() -> None:
    table = LocalPresence()
    for n in range(5):
        table.add("agent:1", member(f"u{n}", f"c{n}"))

    listing = listed(table, "agent:1", limit=2)

    assert [orjson.loads(e)["user"] for e in listing.entries] == ["u0", "u1"]
    assert listing.truncated


def test_a_listing_follows_joins_and_leaves_after_it_was_answered() -> None:
    table = LocalPresence()
    table.add("agent:1", member("bob", "c2"))
    assert len(listed(table, "agent:1").entries) == 1

    table.add("agent:1", member("alice", "c1"))
    table.remove("agent:1", "c2")
    table.add("agent:1", member("carol", "c3"))

    assert [orjson.loads(e)["user"] for e in listed(table, "agent:1").entries] == [
        "alice",
        "carol",
    ]
    assert listed(table, "agent:9").entries == []


def test_listings_of_replicas_merge_in_user_and_connection_order_under_the_cap() -> None:
    replicas = [LocalPresence(), LocalPresence(), LocalPresence()]
    users = [f"user{n % 7}" for n in range(30)]
    for n, user in enumerate(users):
        replicas[n % 3].add("agent:1", member(user, f"c{n:02d}", f"r{n % 3}"))
    query = {"q": "presence", "channel": "agent:1", "limit": 12, "binary": False}
    answers = [table.answer(query) for table in replicas]

    listing = Listing.merge([a for a in answers if isinstance(a, bytes)], cap=12)

    everyone = sorted((user, f"c{n:02d}") for n, user in enumerate(users))
    entries = [orjson.loads(e) for e in listing.entries]
    assert [(e["user"], e["connection"]) for e in entries] == everyone[:12]
    assert listing.truncated
    assert not Listing.merge([a for a in answers if isinstance(a, bytes)], cap=30).truncated


def test_malformed_listings_are_left_out() -> None:
    good = LocalPresence()
    good.add("agent:1", member("alice", "c1"))
    answer = good.answer({"q": "presence", "channel": "agent:1", "limit": 5})
    assert isinstance(answer, bytes)
    bad = [b"", b"{}", msgpack.packb([1, b"key"]), msgpack.packb(["x", b"k", b"e"])]

    listing = Listing.merge([*bad, answer], cap=5)

    assert [orjson.loads(e)["user"] for e in listing.entries] == ["alice"]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("a", "z"), ("ab", "a")),
        (("a", "c1"), ("a", "c2")),
        (("a", "x"), ("a\x00", "a")),
        (("a\x00", "z"), ("a\x00b", "a")),
        (("Z", "c"), ("a", "c")),
        (("é", "c"), ("\U0001f600", "c")),
        (("", "c"), ("\x00", "c")),
    ],
)
def test_order_keys_sort_like_user_then_connection(
    first: tuple[str, str], second: tuple[str, str]
) -> None:
    assert first < second
    assert order_key(*first) < order_key(*second)


def test_adding_the_same_subscription_twice_is_not_new() -> None:
    table = LocalPresence()
    assert table.add("agent:1", member("alice", "c1"))
    assert not table.add("agent:1", member("alice", "c1"))
    assert table.count("agent:1") == 1


def test_removing_a_connection_returns_every_channel_it_was_in_and_forgets_them() -> None:
    table = LocalPresence()
    table.add("agent:1", member("alice", "c1"))
    table.add("agent:2", member("alice", "c1"))
    table.add("agent:2", member("bob", "c2"))

    gone = table.remove_connection("c1")

    assert [channel for channel, _ in gone] == ["agent:1", "agent:2"]
    assert table.answer({"q": "channels"}) == {"channels": {"agent:2": 1}}


def test_stats_count_users_by_digest_and_connections() -> None:
    table = LocalPresence()
    table.add("agent:1", member("alice", "c1"))
    table.add("agent:1", member("bob", "c3"))
    first = table.answer({"q": "stats", "channel": "agent:1"})  # counted from here on

    table.add("agent:1", member("alice", "c2"))
    table.remove("agent:1", "c3")
    answer = table.answer({"q": "stats", "channel": "agent:1"})

    assert first == {"users": [user_digest("alice"), user_digest("bob")], "connections": 2}
    assert answer == {"users": [user_digest("alice")], "connections": 2}


def test_channels_answer_filters_by_namespace() -> None:
    table = LocalPresence()
    table.add("agent:1", member("alice", "c1"))
    table.add("conversation:1", member("alice", "c1"))

    assert table.answer({"q": "channels", "namespace": "agent"}) == {"channels": {"agent:1": 1}}


def test_unknown_query_is_a_bad_request() -> None:
    with pytest.raises(ProtocolError) as info:
        LocalPresence().answer({"q": "everything"})
    assert info.value.code == "bad_request"


def test_roster_drops_the_members_of_a_dead_replica_only() -> None:
    roster = Roster()
    roster.follow("agent:1")
    roster.answered("agent:1", roster.asking("agent:1"), [member("alice", "c1", "r1")])
    roster.joined("agent:1", member("bob", "c2", "r2"))
    roster.joined("agent:9", member("carol", "c3", "r2"))  # not followed: ignored

    gone = roster.drop_replica("r2")

    assert gone == [("agent:1", member("bob", "c2", "r2"))]
    assert roster.drop_replica("r2") == []
    assert roster.left("agent:1", "c1") == member("alice", "c1", "r1")


def test_join_and_leave_notices_of_one_pass_travel_together_in_order() -> None:
    alice = member("alice", "c1", info={"avatar": "a.png"})
    bob = member("bob", "c2", "r2")
    events = [("join", alice), ("join", bob), ("leave", alice)]

    [data] = encode_events(events, limit=10_000)

    assert decode_events(data) == events


def test_notices_past_the_limit_are_cut_into_several_messages_in_order() -> None:
    events = [("join", member(f"u{n}", f"c{n}", info={"pad": "x" * 50})) for n in range(40)]

    batches = encode_events(events, limit=500)

    assert len(batches) > 4
    assert all(len(data) <= 500 for data in batches)
    assert [event for data in batches for event in decode_events(data)] == events


def test_a_single_notice_as_older_replicas_send_it_is_read() -> None:
    data = orjson.dumps({"e": "leave", "u": "alice", "c": "c1", "r": "r1", "i": None})
    assert decode_events(data) == [("leave", member("alice", "c1"))]


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[1]",
        b'{"e": "publish"}',
        b'{"e": "join", "u": 1, "c": "c", "r": "r"}',
        b'[{"e": "join", "u": "a", "c": "c", "r": "r"}, {"e": "x"}]',
    ],
)
def test_anything_else_on_the_subject_is_not_a_notice(data: bytes) -> None:
    with pytest.raises(ValueError, match=r"not|member"):
        decode_events(data)


def test_a_large_answer_is_split_and_gathered_back_whole() -> None:
    body = {"clients": [{"user": f"u{n}", "connection": f"c{n}"} for n in range(2000)]}
    gathering = Gathering(["r1"])

    parts = split(body, "r1", part_bytes=1000)
    for headers, data in reversed(parts):
        assert not gathering.done
        gathering.accept(headers, data)

    assert len(parts) > 10
    assert gathering.done
    assert gathering.answers() == {"r1": body}


def test_the_askers_own_answer_is_taken_whole_beside_the_others_parts() -> None:
    gathering = Gathering(["me", "r2"])
    gathering.take("me", b'{"n": 1}')
    assert not gathering.done

    for headers, data in split({"n": 2}, "r2", part_bytes=3):
        gathering.accept(headers, data)

    assert gathering.done
    assert gathering.answers() == {"me": {"n": 1}, "r2": {"n": 2}}


def test_gathering_waits_for_every_known_replica_and_any_unknown_one_that_answers() -> None:
    gathering = Gathering(["r1", "r2"])
    for headers, data in split({"n": 1}, "r1") + split({"n": 3}, "r3"):
        gathering.accept(headers, data)
    assert not gathering.done

    for headers, data in split({"n": 2}, "r2"):
        gathering.accept(headers, data)

    assert gathering.done
    assert sorted(gathering.answers()) == ["r1", "r2", "r3"]


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {},
        {REPLICA_HEADER: "r1"},
        {REPLICA_HEADER: "r1", PART_HEADER: "x"},
        {REPLICA_HEADER: "r1", PART_HEADER: "3/2"},
    ],
)
def test_malformed_parts_are_ignored(headers: dict[str, str] | None) -> None:
    gathering = Gathering(["r1"])
    gathering.accept(headers, b"{}")
    assert not gathering.done
    assert gathering.answers() == {}


def test_merged_stats_count_a_user_on_two_replicas_once() -> None:
    alice, bob = user_digest("alice"), user_digest("bob")
    answers = [{"users": [alice], "connections": 1}, {"users": [alice, bob], "connections": 3}]
    assert merge_stats(answers) == (2, 4)


def test_merged_channels_sum_subscribers_per_channel() -> None:
    answers = [{"channels": {"agent:1": 2, "agent:2": 1}}, {"channels": {"agent:1": 3}}]
    assert merge_channels(answers) == [
        {"channel": "agent:1", "subscribers": 5},
        {"channel": "agent:2", "subscribers": 1},
    ]


def test_a_replica_silent_for_the_ttl_is_dead_and_this_one_never_is() -> None:
    peers = Peers("me", now=0.0)
    assert peers.heard("r2", now=1.0)
    assert not peers.heard("r2", now=5.0)
    peers.heard("r3", now=2.0)

    assert peers.expire(now=12.0, ttl=10.0) == ["r3"]
    assert peers.alive() == {"me", "r2"}
    assert peers.expire(now=100.0, ttl=10.0) == ["r2"]
    assert peers.alive() == {"me"}


def test_split_answers_are_json() -> None:
    [(headers, data)] = split({"a": 1}, "r1")
    assert orjson.loads(data) == {"a": 1}
    assert headers == {REPLICA_HEADER: "r1", PART_HEADER: "0/1"}


def test_roster_learning_members_reports_only_those_it_did_not_know() -> None:
    roster = Roster()
    roster.follow("agent:1")
    roster.joined("agent:1", member("alice", "c1", "r1"))

    question = roster.asking("agent:1")
    added = roster.answered(
        "agent:1", question, [member("alice", "c1", "r1"), member("bob", "c2", "r2")]
    )

    assert added == [member("bob", "c2", "r2")]


def test_roster_does_not_learn_from_an_answer_a_connection_that_left_after_the_question() -> None:
    roster = Roster()
    roster.follow("agent:1")
    first = roster.asking("agent:1")
    roster.left("agent:1", "c1")  # read before the answer that still lists it
    second = roster.asking("agent:1")  # asked after the leave: its answer is trusted

    stale = roster.answered("agent:1", first, [member("alice", "c1", "r1")])
    fresh = roster.answered("agent:1", second, [member("alice", "c1", "r1")])

    assert stale == []
    assert fresh == [member("alice", "c1", "r1")]


def test_roster_does_not_learn_the_members_of_a_replica_dropped_after_the_question() -> None:
    roster = Roster()
    roster.follow("agent:1")
    roster.joined("agent:1", member("bob", "c2", "r2"))
    question = roster.asking("agent:1")
    roster.drop_replica("r2")

    assert roster.answered("agent:1", question, [member("bob", "c2", "r2")]) == []
    assert roster.drop_replica("r2") == []
