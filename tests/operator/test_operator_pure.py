"""Stream drift and conditions: the pure decisions of the operator (no cluster needed)."""

from __future__ import annotations

import dataclasses

from nats.js.api import StreamConfig

from neurelay.config import NamespaceSettings
from neurelay.operator import conditions as cond
from neurelay.operator.drift import stream_drift
from neurelay.operator.settings import OperatorSettings
from neurelay.streams import desired_stream

DESIRED = desired_stream("p", "agent", NamespaceSettings(history_messages=100))


def as_server_reports(config: StreamConfig) -> StreamConfig:
    """The config as the server returns it: defaults filled in, enums as strings."""
    return StreamConfig.from_response(
        {**config.as_dict(), "retention": "limits", "max_msgs": -1, "max_bytes": -1}
    )


def test_identical_stream_is_in_sync_despite_server_defaults() -> None:
    drift = stream_drift(DESIRED, as_server_reports(DESIRED))
    assert drift.in_sync


def test_unlimited_age_spelled_zero_or_none_is_the_same() -> None:
    desired = desired_stream("p", "agent", NamespaceSettings(history_max_age_seconds=0))
    actual = dataclasses.replace(as_server_reports(desired), max_age=0.0)
    assert stream_drift(desired, actual).in_sync


def test_history_change_is_an_in_place_update() -> None:
    actual = dataclasses.replace(as_server_reports(DESIRED), max_msgs_per_subject=5)
    drift = stream_drift(DESIRED, actual)
    assert drift.changed == ("max_msgs_per_subject",)
    assert drift.compatible
    assert "5 -> 100" in drift.describe()


def test_storage_change_is_incompatible() -> None:
    desired = desired_stream("p", "agent", NamespaceSettings(storage="memory"))
    drift = stream_drift(desired, as_server_reports(DESIRED))
    assert drift.immutable == ("storage",)
    assert not drift.compatible


def test_republish_drift_is_detected() -> None:
    actual = dataclasses.replace(as_server_reports(DESIRED), republish=None)
    assert stream_drift(DESIRED, actual).changed == ("republish",)


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
