"""TokenBucket (per-connection rate limit) and LeaseTable (per-user connection count)."""

from __future__ import annotations

import pytest

from neurelay.gateway.limits import LeaseTable, TokenBucket

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


# -- LeaseTable -------------------------------------------------------------------------------


def test_admit_grants_leases_up_to_the_limit() -> None:
    table = LeaseTable()

    results = [table.admit(f"c{i}", now=0.0, limit=3, lease_seconds=30) for i in range(5)]

    assert results == [True, True, True, False, False]
    assert set(table.leases) == {"c0", "c1", "c2"}


def test_admit_records_the_lease_expiry() -> None:
    table = LeaseTable()

    table.admit("c", now=100.0, limit=1, lease_seconds=30)

    assert table.leases == {"c": 130.0}


def test_renewal_of_a_held_lease_succeeds_at_the_limit() -> None:
    table = LeaseTable()
    table.admit("a", now=0.0, limit=2, lease_seconds=30)
    table.admit("b", now=0.0, limit=2, lease_seconds=30)

    assert table.admit("a", now=10.0, limit=2, lease_seconds=30)
    assert table.leases["a"] == 40.0


def test_renewal_succeeds_even_when_the_limit_was_lowered() -> None:
    table = LeaseTable({"a": 50.0, "b": 50.0, "c": 50.0})

    assert table.admit("a", now=0.0, limit=1, lease_seconds=30)
    assert not table.admit("d", now=0.0, limit=1, lease_seconds=30)


def test_expired_leases_do_not_count_against_the_limit() -> None:
    table = LeaseTable({"old": 10.0})

    assert table.admit("new", now=10.0, limit=1, lease_seconds=30)
    assert table.leases == {"new": 40.0}


def test_prune_drops_leases_expiring_at_or_before_now() -> None:
    table = LeaseTable({"gone": 5.0, "edge": 10.0, "live": 10.5})

    table.prune(10.0)

    assert table.leases == {"live": 10.5}


def test_renew_extends_the_given_leases_and_prunes_expired_ones() -> None:
    table = LeaseTable({"a": 20.0, "b": 20.0, "dead": 1.0})

    table.renew(["a"], now=10.0, lease_seconds=30)

    assert table.leases == {"a": 40.0, "b": 20.0}


def test_renew_restores_a_lease_missing_from_the_table() -> None:
    table = LeaseTable()

    table.renew(["a"], now=10.0, lease_seconds=30)

    assert table.leases == {"a": 40.0}


def test_release_frees_a_slot() -> None:
    table = LeaseTable()
    table.admit("a", now=0.0, limit=1, lease_seconds=30)

    table.release(["a"], now=1.0)

    assert table.leases == {}
    assert table.admit("b", now=1.0, limit=1, lease_seconds=30)


def test_release_of_an_unknown_connection_is_harmless() -> None:
    table = LeaseTable({"a": 40.0})

    table.release(["zzz"], now=0.0)

    assert table.leases == {"a": 40.0}


def test_encode_decode_round_trips() -> None:
    table = LeaseTable({"conn-1": 1_700_000_030.25, "conn-2": 1_700_000_031.0})

    assert LeaseTable.decode(table.encode()).leases == table.leases


def test_empty_table_encodes_to_an_empty_object() -> None:
    assert LeaseTable().encode() == b"{}"


@pytest.mark.parametrize("data", [None, b"", b"garbage", b"\xff\xfe", b"[1, 2]", b"null", b'"x"'])
def test_undecodable_value_gives_an_empty_table(data: bytes | None) -> None:
    assert LeaseTable.decode(data).leases == {}


def test_decode_drops_entries_that_are_not_numbers() -> None:
    data = b'{"a": 10, "b": "soon", "c": null, "d": [1], "e": 2.5}'

    assert LeaseTable.decode(data).leases == {"a": 10.0, "e": 2.5}


def test_decoded_table_admits_against_the_stored_leases() -> None:
    data = LeaseTable({"a": 100.0, "b": 100.0}).encode()
    table = LeaseTable.decode(data)

    assert not table.admit("c", now=50.0, limit=2, lease_seconds=30)
    assert table.admit("c", now=100.0, limit=2, lease_seconds=30)
