"""Conditions and back-off: pure decisions of the operator (no cluster needed).

Stream drift is proven in tests/jetstream, with the module that computes it.
"""

from __future__ import annotations

from neurelay.operator import conditions as cond
from neurelay.operator.settings import OperatorSettings


def test_condition_keeps_transition_time_while_status_holds() -> None:
    first = cond.set_condition([], "Ready", True, "A", timestamp="t1")
    second = cond.set_condition(first, "Ready", True, "B", "other", timestamp="t2")
    assert second[0]["lastTransitionTime"] == "t1"
    third = cond.set_condition(second, "Ready", False, "C", timestamp="t3")
    assert third[0]["lastTransitionTime"] == "t3"


def test_condition_order_is_stable_and_status_change_detected() -> None:
    conditions = cond.set_condition([], "Ready", True, "A", timestamp="t")
    conditions = cond.set_condition(conditions, "Degraded", False, "B", timestamp="t")
    again = cond.set_condition(conditions, "Ready", True, "A", timestamp="t9")
    assert [c["type"] for c in again] == ["Ready", "Degraded"]
    assert not cond.status_changed({"conditions": conditions}, {"conditions": again})
    assert cond.status_changed({"conditions": conditions}, {"messages": 1})


def test_operator_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    settings = OperatorSettings(retry_base_seconds=1, retry_max_seconds=5)
    delays = [settings.backoff(n) for n in range(5)]
    assert all(low / 2 <= d <= low for d, low in zip(delays, [1, 2, 4, 5, 5], strict=True))
