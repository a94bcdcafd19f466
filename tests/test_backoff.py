"""The one back-off formula: exponential, capped, jittered, and finite for any attempt."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from neurelay.backoff import Backoff


def test_backoff_doubles_from_the_initial_delay_up_to_the_cap() -> None:
    backoff = Backoff(initial_seconds=0.5, max_seconds=3.0)
    assert [backoff.delay(n, rand=lambda: 0.0) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_jitter_takes_at_most_its_share_of_the_delay() -> None:
    backoff = Backoff(initial_seconds=1.0, max_seconds=8.0, jitter=0.25)
    assert backoff.delay(3, rand=lambda: 0.0) == 8.0
    assert backoff.delay(3, rand=lambda: 1.0) == 6.0


@given(
    attempt=st.integers(min_value=-5, max_value=10**9),
    initial=st.floats(min_value=1e-3, max_value=10.0),
    extra=st.floats(min_value=0.0, max_value=1000.0),
)
def test_every_delay_is_finite_and_between_half_the_floor_and_the_cap(
    attempt: int, initial: float, extra: float
) -> None:
    backoff = Backoff(initial_seconds=initial, max_seconds=initial + extra)
    delay = backoff.delay(attempt)
    assert initial / 2 <= delay <= initial + extra


@pytest.mark.parametrize(
    ("initial", "maximum", "jitter"),
    [(0.0, 1.0, 0.5), (2.0, 1.0, 0.5), (0.1, 1.0, 1.5), (0.1, 1.0, -0.1)],
)
def test_backoff_refuses_settings_that_would_spin_or_grow_unbounded(
    initial: float, maximum: float, jitter: float
) -> None:
    with pytest.raises(ValueError, match="back-off"):
        Backoff(initial_seconds=initial, max_seconds=maximum, jitter=jitter)
