"""The gateway's budget of HTTP publishes in flight: first come, first served, never lost."""

from __future__ import annotations

import asyncio

from neurelay.gateway.budget import Budget


async def test_requests_that_fit_go_at_once_and_the_rest_wait_in_order():
    budget = Budget()
    assert await budget.take(60, 100, timeout=1.0) == 60
    second = asyncio.ensure_future(budget.take(60, 100, timeout=5.0))
    third = asyncio.ensure_future(budget.take(10, 100, timeout=5.0))
    await asyncio.sleep(0)
    # The third would fit, but does not overtake the second.
    assert not second.done()
    assert not third.done()
    budget.give(60)
    assert await second == 60
    assert await third == 10
    assert budget.used == 70


async def test_a_request_heavier_than_the_budget_goes_alone():
    budget = Budget()
    assert await budget.take(500, 100, timeout=1.0) == 100
    waiting = asyncio.ensure_future(budget.take(500, 100, timeout=5.0))
    await asyncio.sleep(0)
    assert not waiting.done()
    budget.give(100)
    assert await waiting == 100


async def test_a_request_that_waited_too_long_gets_nothing_and_lets_the_next_in():
    budget = Budget()
    await budget.take(90, 100, timeout=1.0)
    late = asyncio.ensure_future(budget.take(50, 100, timeout=0.01))
    small = asyncio.ensure_future(budget.take(10, 100, timeout=5.0))
    assert await late is None
    assert await small == 10
    assert budget.used == 100


async def test_a_request_that_goes_away_while_waiting_leaves_nothing_taken():
    budget = Budget()
    await budget.take(100, 100, timeout=1.0)
    gone = asyncio.ensure_future(budget.take(50, 100, timeout=5.0))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    budget.give(100)
    assert budget.used == 0
    assert budget.waiting == 0


async def test_a_request_finding_the_waiting_line_full_is_refused_at_once():
    budget = Budget()
    await budget.take(100, 100, timeout=1.0)
    waiting = asyncio.ensure_future(budget.take(70, 100, timeout=5.0))
    await asyncio.sleep(0)
    assert await budget.take(40, 100, timeout=5.0) is None
    budget.give(100)
    assert await waiting == 70
    assert await budget.take(30, 100, timeout=1.0) == 30
