"""Deadlines: one loop timer for every connection's deadline, never early, each fired once."""

from __future__ import annotations

import asyncio
import time

import pytest

from neurelay.gateway.deadlines import DEAD, PING, Deadlines, Heartbeat, deadlines

pytestmark = pytest.mark.timeout(30)


class Owner:
    def __init__(self, name: str, log: list[tuple[str, float]], fail: bool = False) -> None:
        self.name = name
        self.log = log
        self.fail = fail
        self.when = 0.0

    def on_deadline(self) -> None:
        self.log.append((self.name, time.time()))
        if self.fail:
            raise RuntimeError("owner fault")


async def _until(log: list[tuple[str, float]], count: int) -> None:
    for _ in range(400):
        if len(log) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"only {log} fired")


async def test_each_deadline_fires_once_not_before_its_time_and_in_order():
    wheel = Deadlines(asyncio.get_running_loop(), resolution=0.01)
    log: list[tuple[str, float]] = []
    now = time.time()
    owners = {name: Owner(name, log) for name in "abc"}
    for offset, name in ((0.09, "c"), (0.03, "a"), (0.06, "b")):
        owners[name].when = now + offset
        wheel.set(owners[name], owners[name].when)
    await _until(log, 3)
    assert [name for name, _ in log] == ["a", "b", "c"]
    assert all(fired >= owners[name].when for name, fired in log)
    assert len(wheel) == 0


async def test_a_new_deadline_replaces_the_last_and_cancel_or_none_removes_it():
    wheel = Deadlines(asyncio.get_running_loop(), resolution=0.01)
    log: list[tuple[str, float]] = []
    moved, cancelled, unset, last = (Owner(n, log) for n in ("moved", "cancelled", "unset", "last"))
    now = time.time()
    wheel.set(moved, now + 0.01)
    wheel.set(moved, now + 0.05)
    wheel.set(cancelled, now + 0.02)
    wheel.cancel(cancelled)
    wheel.set(unset, now + 0.02)
    wheel.set(unset, None)
    wheel.set(last, now + 0.1)
    await _until(log, 2)
    await asyncio.sleep(0.05)
    assert [name for name, _ in log] == ["moved", "last"]
    assert log[0][1] >= now + 0.05


async def test_an_owner_that_raises_does_not_stop_the_others():
    loop = asyncio.get_running_loop()
    wheel = Deadlines(loop, resolution=0.01)
    log: list[tuple[str, float]] = []
    errors: list[object] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context["exception"]))
    try:
        when = time.time() + 0.02
        wheel.set(Owner("faulty", log, fail=True), when)
        wheel.set(Owner("fine", log), when)
        await _until(log, 2)
    finally:
        loop.set_exception_handler(None)
    assert sorted(name for name, _ in log) == ["faulty", "fine"]
    assert [str(e) for e in errors] == ["owner fault"]


async def test_churn_does_not_grow_the_timer_state():
    wheel = Deadlines(asyncio.get_running_loop(), resolution=0.01)
    log: list[tuple[str, float]] = []
    owners = [Owner(str(n), log) for n in range(100)]
    far = time.time() + 3600
    for round_ in range(50):  # connections come and go, each with its own far deadline
        for n, owner in enumerate(owners):
            wheel.set(owner, far + round_ + n / 100)
        for owner in owners:
            wheel.cancel(owner)
    assert len(wheel) == 0
    assert len(wheel._heap) <= 2 * 100 + 64
    assert log == []


async def test_one_deadlines_per_event_loop():
    assert deadlines() is deadlines()


def test_a_heartbeat_pings_a_quiet_client_and_gives_it_up_without_an_answer():
    beat = Heartbeat(interval=10.0, now=100.0)
    assert beat.due == 110.0
    assert beat.tick(109.9) is None
    assert beat.tick(110.0) == PING
    assert beat.due == 115.0
    assert beat.tick(114.0) is None
    assert beat.tick(115.0) == DEAD


def test_a_heartbeat_waits_while_the_client_is_heard_from():
    beat = Heartbeat(interval=10.0, now=100.0)
    beat.heard(105.0)
    assert beat.tick(110.0) is None  # heard 5 s ago: the next look is 10 s after that
    assert beat.due == 115.0
    assert beat.tick(115.0) == PING
    beat.heard(116.0)  # the pong (or any frame)
    assert beat.tick(120.0) is None  # answered: not dead, quiet for 10 s from the pong
    assert beat.due == 126.0
    assert beat.tick(126.0) == PING
