"""The per-user request rate of the HTTP API, on plain numbers."""

from __future__ import annotations

from neurelay.gateway.throttling import RequestThrottle


def test_a_user_gets_the_burst_then_the_rate():
    throttle = RequestThrottle()
    granted = [throttle.allow("alice", 100.0, rate=2.0, burst=3.0) for _ in range(5)]
    assert granted == [True, True, True, False, False]
    assert throttle.allow("alice", 100.5, rate=2.0, burst=3.0)
    assert not throttle.allow("alice", 100.5, rate=2.0, burst=3.0)


def test_one_user_at_the_limit_does_not_limit_another():
    throttle = RequestThrottle()
    while throttle.allow("flooder", 0.0, rate=1.0, burst=10.0):
        pass
    assert throttle.allow("bystander", 0.0, rate=1.0, burst=10.0)


def test_users_idle_long_enough_to_refill_are_forgotten():
    throttle = RequestThrottle()
    for n in range(1000):
        throttle.allow(f"user-{n}", 0.0, rate=10.0, burst=10.0)
    assert len(throttle) == 1000
    throttle.allow("late", 1.0, rate=10.0, burst=10.0)
    assert len(throttle) == 1


def test_a_forgotten_user_starts_again_with_a_full_burst():
    throttle = RequestThrottle()
    assert [throttle.allow("a", 0.0, rate=1.0, burst=2.0) for _ in range(3)] == [
        True,
        True,
        False,
    ]
    assert [throttle.allow("a", 5.0, rate=1.0, burst=2.0) for _ in range(3)] == [
        True,
        True,
        False,
    ]


def test_a_costly_request_spends_its_cost_or_nothing():
    throttle = RequestThrottle()
    assert throttle.allow("alice", 0.0, rate=0.001, burst=100.0, cost=60)
    assert not throttle.allow("alice", 0.0, rate=0.001, burst=100.0, cost=60)
    assert throttle.allow("alice", 0.0, rate=0.001, burst=100.0, cost=40)
    assert not throttle.allow("alice", 0.0, rate=0.001, burst=100.0)
