"""TokenBucket (per-connection rate limit) and UserTable (per-user connection count)."""

from __future__ import annotations

import pytest

from neurelay.gateway.limits import TokenBucket, UserTable

# -- TokenBucket ------------------------------------------------------------------------------


def take_all(bucket: TokenBucket, now: float, rate: float, burst: float, attempts: int) -> int:
    return sum(bucket.take(now, rate, burst) for _ in range(attempts))


def test_bucket_allows_its_burst_at_once_then_refuses() -> None:
    bucket = TokenBucket(5, now=0.0)

    assert take_all(bucket, 0.0, rate=1, burst=5, attempts=10) == 5


def test_bucket_refills_at_the_rate() -> None:
    bucket = TokenBucket(2, now=0.0)
    take_all(bucket, 0.0, rate=10, burst=2, attempts=2)

    assert not bucket.take(0.05, rate=10, burst=2)
    assert bucket.take(0.1, rate=10, burst=2)
    assert not bucket.take(0.1, rate=10, burst=2)


def test_bucket_never_holds_more_than_its_burst() -> None:
    bucket = TokenBucket(3, now=0.0)

    assert take_all(bucket, 1000.0, rate=100, burst=3, attempts=10) == 3


def test_sender_at_twice_the_rate_gets_half_its_frames_through() -> None:
    bucket = TokenBucket(1, now=0.0)

    allowed = sum(bucket.take(i / 4, rate=2, burst=1) for i in range(1, 201))

    assert allowed == 100


def test_sender_at_exactly_the_rate_is_never_refused() -> None:
    bucket = TokenBucket(1, now=0.0)

    assert all(bucket.take(i / 2, rate=2, burst=1) for i in range(1, 201))


def test_bucket_honours_a_smaller_burst_given_later() -> None:
    bucket = TokenBucket(10, now=0.0)

    assert take_all(bucket, 0.0, rate=1, burst=2, attempts=10) == 2


def test_bucket_honours_a_higher_rate_given_later() -> None:
    bucket = TokenBucket(1, now=0.0)
    bucket.take(0.0, rate=1, burst=10)

    assert take_all(bucket, 0.5, rate=20, burst=10, attempts=20) == 10


def test_clock_stepping_back_neither_refills_nor_drains_the_bucket() -> None:
    bucket = TokenBucket(2, now=10.0)

    assert take_all(bucket, 5.0, rate=1, burst=2, attempts=3) == 2


def test_bucket_with_fractional_tokens_refuses_until_a_whole_token_accrues() -> None:
    bucket = TokenBucket(0.5, now=0.0)

    assert not bucket.take(0.0, rate=1, burst=1)
    assert bucket.take(0.5, rate=1, burst=1)


# -- UserTable --------------------------------------------------------------------------------


def test_admit_grants_entries_up_to_the_limit() -> None:
    table = UserTable()

    results = [table.admit(f"c{i}", "r1", limit=3, held=set(table.entries)) for i in range(5)]

    assert results == [True, True, True, False, False]
    assert table.entries == {"c0": "r1", "c1": "r1", "c2": "r1"}


def test_limit_counts_entries_of_every_replica() -> None:
    table = UserTable({"a": "r1", "b": "r2"})

    assert not table.admit("c", "r3", limit=2, held=())


def test_a_held_connection_is_admitted_again_even_when_the_limit_was_lowered() -> None:
    table = UserTable({"a": "r1", "b": "r1", "c": "r1"})

    assert table.admit("a", "r1", limit=1, held={"a", "b", "c"})
    assert not table.admit("d", "r1", limit=1, held={"a", "b", "c"})


def test_admit_drops_its_replicas_entries_that_replica_no_longer_holds() -> None:
    # "a" closed on r1, its release not in the table yet: it no longer takes a place.
    table = UserTable({"a": "r1", "b": "r1"})
    assert table.admit("c", "r1", limit=2, held={"b"})
    assert table.entries == {"b": "r1", "c": "r1"}


def test_admit_never_drops_what_another_replica_holds() -> None:
    table = UserTable({"a": "r2"})
    assert not table.admit("c", "r1", limit=1, held=set())
    assert table.entries == {"a": "r2"}


def test_admit_counts_connections_its_replica_is_still_admitting() -> None:
    table = UserTable({"a": "r1"})
    assert not table.admit("c", "r1", limit=1, held={"a"})
    assert table.entries == {"a": "r1"}


def test_prune_drops_only_the_entries_of_replicas_that_are_not_alive() -> None:
    table = UserTable({"a": "live", "b": "dead", "c": "live", "d": "dead"})

    dropped = table.prune({"live"}.__contains__)

    assert dropped
    assert table.entries == {"a": "live", "c": "live"}


def test_prune_reports_when_nothing_was_dropped() -> None:
    table = UserTable({"a": "live"})

    assert not table.prune({"live"}.__contains__)


def test_entries_of_a_dead_replica_stop_counting_once_pruned() -> None:
    table = UserTable({"a": "dead", "b": "dead"})

    table.prune(lambda replica: False)

    assert table.admit("c", "r1", limit=1, held=())


def test_replicas_lists_each_holder_once() -> None:
    assert UserTable({"a": "r1", "b": "r1", "c": "r2"}).replicas() == {"r1", "r2"}


def test_restore_puts_back_entries_even_above_the_limit() -> None:
    table = UserTable({"x": "r2"})

    table.restore(["a", "b"], "r1")

    assert table.entries == {"x": "r2", "a": "r1", "b": "r1"}


def test_release_frees_a_slot() -> None:
    table = UserTable()
    table.admit("a", "r1", limit=1, held=())

    table.release(["a"])

    assert table.entries == {}
    assert table.admit("b", "r1", limit=1, held=())


def test_release_of_an_unknown_connection_is_harmless() -> None:
    table = UserTable({"a": "r1"})

    table.release(["zzz"])

    assert table.entries == {"a": "r1"}


def test_encode_decode_round_trips() -> None:
    table = UserTable({"0f3a-1": "0f3a", "77c2-9": "77c2"})

    assert UserTable.decode(table.encode()).entries == table.entries


def test_empty_table_encodes_to_an_empty_object() -> None:
    assert UserTable().encode() == b"{}"


@pytest.mark.parametrize("data", [None, b"", b"garbage", b"\xff\xfe", b"[1, 2]", b"null", b'"x"'])
def test_undecodable_value_gives_an_empty_table(data: bytes | None) -> None:
    assert UserTable.decode(data).entries == {}


def test_decode_drops_entries_whose_replica_is_not_a_string() -> None:
    data = b'{"a": "r1", "b": 10, "c": null, "d": ["r1"], "e": "r2"}'

    assert UserTable.decode(data).entries == {"a": "r1", "e": "r2"}
