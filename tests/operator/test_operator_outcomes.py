"""What a stream sync means for a Channel, and which Channel governs a namespace (no cluster)."""

from __future__ import annotations

import dataclasses
from typing import Any

from nats.js.api import StreamInfo, StreamState

from neurelay.config import NamespaceSettings
from neurelay.jetstream.streams import desired_stream, stream_drift
from neurelay.jetstream.syncing import StreamOutcome
from neurelay.operator.directory import ChannelEntry, index_channel
from neurelay.operator.election import channel_owner, served_channels
from neurelay.operator.outcomes import Event, Recorded, recorded, stream_outcome

DESIRED = desired_stream("p", "agent", NamespaceSettings(history_messages=100))
INFO = StreamInfo(config=DESIRED, state=StreamState(0, 0, 0, 0, 0, 0))
FIRST_TIME = Recorded(stream=False, in_sync=False)
SPEC_CHANGED = Recorded(stream=True, in_sync=False)
SAME_SPEC = Recorded(stream=True, in_sync=True)


def synced(action: Any, **changes: Any) -> StreamOutcome:
    drift = stream_drift(DESIRED, dataclasses.replace(DESIRED, **changes)) if changes else None
    return StreamOutcome(action, INFO, drift)


def test_a_new_stream_is_created_with_a_normal_event() -> None:
    outcome = stream_outcome("p_agent", synced("created"), FIRST_TIME)
    assert (outcome.action, outcome.ready, outcome.reason) == ("created", True, "StreamReady")
    assert outcome.event == Event("Normal", "StreamCreated", "stream p_agent created")


def test_a_stream_missing_under_an_unchanged_spec_was_deleted_behind_our_back() -> None:
    outcome = stream_outcome("p_agent", synced("created"), SAME_SPEC)
    assert outcome.action == "recreated"
    assert outcome.event is not None
    assert (outcome.event.type, outcome.event.reason) == ("Warning", "StreamRecreated")


def test_an_update_under_an_unchanged_spec_corrects_drift_and_says_what() -> None:
    outcome = stream_outcome("p_agent", synced("updated", max_msgs=7), SAME_SPEC)
    assert outcome.action == "drift-corrected"
    assert outcome.event == Event(
        "Warning",
        "StreamDriftCorrected",
        "stream p_agent was changed on the server; changed back: max_msgs 7 -> -1",
    )
    assert outcome.message == "stream p_agent matches the spec"


def test_an_update_after_a_spec_change_is_a_normal_update() -> None:
    outcome = stream_outcome("p_agent", synced("updated", max_msgs_per_subject=5), SPEC_CHANGED)
    assert outcome.action == "updated"
    assert outcome.event is not None
    assert (outcome.event.type, outcome.event.reason) == ("Normal", "StreamUpdated")
    assert "max_msgs_per_subject 5 -> 100" in outcome.event.message


def test_an_existing_stream_never_recorded_is_adopted() -> None:
    outcome = stream_outcome("p_agent", synced("unchanged"), FIRST_TIME)
    assert outcome.action == "adopted"
    assert outcome.event is not None
    assert outcome.event.reason == "StreamAdopted"
    assert outcome.changed_stream


def test_an_unchanged_recorded_stream_reports_nothing() -> None:
    outcome = stream_outcome("p_agent", synced("unchanged"), SAME_SPEC)
    assert (outcome.action, outcome.event, outcome.changed_stream) == ("unchanged", None, False)


def test_an_impossible_change_is_refused_once_per_status_change_not_retried() -> None:
    outcome = stream_outcome("p_agent", synced("incompatible", storage="memory"), SPEC_CHANGED)
    assert (outcome.action, outcome.ready, outcome.reason) == (
        "refused",
        False,
        "IncompatibleChange",
    )
    assert outcome.event_on_change_only
    assert not outcome.changed_stream
    assert "storage 'memory' -> 'file' cannot change in place" in outcome.message
    assert "delete the stream to have it re-created" in outcome.message


def test_an_impossible_change_made_on_the_server_says_so_not_revert_the_spec() -> None:
    outcome = stream_outcome("p_agent", synced("incompatible", deny_delete=True), SAME_SPEC)
    assert outcome.reason == "IncompatibleChange"
    assert "deny_delete True -> False cannot change in place" in outcome.message
    assert "changed on the server, not in the spec" in outcome.message
    assert "revert the spec" not in outcome.message


def ready(status: str, reason: str, generation: int = 3) -> dict[str, Any]:
    return {"type": "Ready", "status": status, "reason": reason, "observedGeneration": generation}


def test_in_sync_means_ready_for_the_current_generation_with_a_stream() -> None:
    status = {"stream": "s", "observedGeneration": 3, "conditions": [ready("True", "StreamReady")]}
    assert recorded(status, 3) == Recorded(stream=True, in_sync=True)
    assert recorded(status, 4) == Recorded(stream=True, in_sync=False)
    assert recorded({}, 1) == Recorded(stream=False, in_sync=False)


def test_a_refused_channel_is_not_in_sync_so_its_refusal_keeps_its_message() -> None:
    status = {
        "stream": "s",
        "observedGeneration": 3,
        "conditions": [ready("False", "IncompatibleChange")],
    }
    before = recorded(status, 3)
    assert not before.in_sync
    outcome = stream_outcome("p_agent", synced("incompatible", storage="memory"), before)
    assert "revert the spec" in outcome.message
    # Deleting the refused stream, as the message says, creates it anew: no alarm.
    assert stream_outcome("p_agent", synced("created"), before).action == "created"


def channel(name: str, created: str, namespace: str = "agent", **extra: Any) -> dict[str, Any]:
    metadata = {"name": name, "namespace": "prod", "creationTimestamp": created, **extra}
    return {"metadata": metadata, "spec": {"gateway": "edge", "namespace": namespace}}


def claimants(*items: dict[str, Any]) -> list[ChannelEntry]:
    """The Channels as the directory files them (invalid specs are not filed)."""
    return [entry for item in items for entry in list(index_channel(item).values())[:1]]


def test_the_oldest_claimant_governs_then_the_name_breaks_ties() -> None:
    entries = claimants(
        channel("b", "2026-01-01T00:00:02Z"),
        channel("z", "2026-01-01T00:00:01Z"),
        channel("a", "2026-01-01T00:00:01Z"),
    )
    assert channel_owner(entries, include_deleting=False) == "a"
    assert channel_owner([], include_deleting=False) is None


def test_a_channel_being_deleted_keeps_governing_until_released() -> None:
    entries = claimants(
        channel("old", "2026-01-01T00:00:01Z", deletionTimestamp="2026-01-02T00:00:00Z"),
        channel("young", "2026-01-01T00:00:05Z"),
    )
    assert channel_owner(entries, include_deleting=True) == "old"
    assert channel_owner(entries, include_deleting=False) == "young"
    assert [s.namespace for s in served_channels(entries)] == ["agent"]


def test_served_channels_skip_invalid_specs_and_take_one_per_namespace() -> None:
    invalid = channel("bad", "2026-01-01T00:00:00Z", namespace="Not Valid")
    entries = claimants(
        invalid,
        channel("c2", "2026-01-01T00:00:04Z", namespace="conversation"),
        channel("c", "2026-01-01T00:00:03Z", namespace="conversation"),
        channel("u", "2026-01-01T00:00:03Z", namespace="user"),
    )
    assert len(entries) == 3
    served = served_channels(entries)
    assert [s.namespace for s in served] == ["conversation", "user"]
