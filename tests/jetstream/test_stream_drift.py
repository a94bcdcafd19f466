"""Stream drift: every field Neurelay sets is compared, and what cannot change in place is named."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from nats.js.api import (
    DiscardPolicy,
    RePublish,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamSource,
)

from neurelay.config import NamespaceSettings
from neurelay.jetstream.streams import FIELDS, IMMUTABLE, desired_stream, stream_drift

DESIRED = desired_stream("p", "agent", NamespaceSettings(history_messages=100))


def as_server_reports(config: StreamConfig, **changes: Any) -> StreamConfig:
    """The config as the server returns it: enums as strings, server metadata added."""
    reported = StreamConfig.from_response(
        {**config.as_dict(), "metadata": {"_nats.ver": "2.15.1"}, "compression": "none"}
    )
    return dataclasses.replace(reported, **changes)


def test_identical_stream_is_in_sync_despite_server_spelling() -> None:
    assert stream_drift(DESIRED, as_server_reports(DESIRED)).in_sync


def test_unlimited_age_spelled_zero_or_none_is_the_same() -> None:
    desired = desired_stream("p", "agent", NamespaceSettings(history_max_age_seconds=0))
    assert stream_drift(desired, as_server_reports(desired, max_age=0.0)).in_sync


def test_absent_limits_read_as_unlimited() -> None:
    actual = as_server_reports(DESIRED, max_msgs=None, max_bytes=0, max_consumers=None)
    assert stream_drift(DESIRED, actual).in_sync


def test_history_change_is_an_in_place_update() -> None:
    drift = stream_drift(DESIRED, as_server_reports(DESIRED, max_msgs_per_subject=5))
    assert drift.changed == ("max_msgs_per_subject",)
    assert drift.compatible
    assert "5 -> 100" in drift.describe()


def test_a_stream_wide_message_limit_set_behind_our_back_is_drift() -> None:
    drift = stream_drift(DESIRED, as_server_reports(DESIRED, max_msgs=7))
    assert drift.changed == ("max_msgs",)
    assert drift.compatible
    assert drift.describe() == "max_msgs 7 -> -1"


# One drifted value per compared field, each as an operator with `nats stream edit` could set it.
DRIFTED: dict[str, Any] = {
    "description": "edited",
    "subjects": ["p.s.agent.*", "p.other.>"],
    "retention": RetentionPolicy.WORK_QUEUE,
    "max_consumers": 3,
    "max_msgs": 7,
    "max_bytes": 1024,
    "max_msg_size": 512,
    "max_msgs_per_subject": 5,
    "max_age": 600.0,
    "discard": DiscardPolicy.NEW,
    "discard_new_per_subject": True,
    "storage": StorageType.MEMORY,
    "num_replicas": 3,
    "no_ack": True,
    "duplicate_window": 5.0,
    "mirror": StreamSource(name="elsewhere"),
    "sources": [StreamSource(name="elsewhere")],
    "sealed": True,
    "deny_delete": True,
    "deny_purge": True,
    "allow_rollup_hdrs": True,
    "allow_direct": False,
    "mirror_direct": True,
    "allow_msg_ttl": True,
    "subject_transform": None,
    "republish": RePublish(src="p.s.agent.*", dest="elsewhere.>"),
}


def test_every_compared_field_has_a_drift_case() -> None:
    assert set(DRIFTED) == set(FIELDS)


@pytest.mark.parametrize("field", [f for f in FIELDS if f != "subject_transform"])
def test_each_field_changed_on_the_server_is_detected(field: str) -> None:
    drift = stream_drift(DESIRED, as_server_reports(DESIRED, **{field: DRIFTED[field]}))
    assert drift.changed == (field,)
    assert drift.compatible == (field not in IMMUTABLE)


def test_a_subject_transform_added_on_the_server_is_detected() -> None:
    from nats.js.api import SubjectTransform

    transform = SubjectTransform(src="p.s.agent.*", dest="p.x.agent.{{wildcard(1)}}")
    drift = stream_drift(DESIRED, as_server_reports(DESIRED, subject_transform=transform))
    assert drift.changed == ("subject_transform",)


def test_storage_change_is_incompatible_and_named() -> None:
    desired = desired_stream("p", "agent", NamespaceSettings(storage="memory"))
    drift = stream_drift(desired, as_server_reports(DESIRED))
    assert drift.immutable == ("storage",)
    assert not drift.compatible
    assert drift.describe(drift.immutable) == "storage 'file' -> 'memory'"


def test_retention_can_change_in_place_except_to_or_from_work_queue() -> None:
    interest = as_server_reports(DESIRED, retention=RetentionPolicy.INTEREST)
    assert stream_drift(DESIRED, interest).compatible
    work_queue = as_server_reports(DESIRED, retention=RetentionPolicy.WORK_QUEUE)
    assert stream_drift(DESIRED, work_queue).immutable == ("retention",)


def test_only_the_immutable_part_of_a_mixed_drift_is_refused() -> None:
    actual = as_server_reports(DESIRED, max_msgs=7, deny_delete=True)
    drift = stream_drift(DESIRED, actual)
    assert drift.changed == ("max_msgs", "deny_delete")
    assert drift.immutable == ("deny_delete",)
