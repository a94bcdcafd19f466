"""Outcomes: what a stream sync means for a Channel, decided purely.

`sync_stream` says what it did on the server (created, updated, unchanged,
incompatible). What that means depends on what the Channel had recorded
before: a stream created for a spec the Channel had already reconciled was
deleted behind its back (re-created); an update without a spec change undoes
drift (drift-corrected); an existing stream the Channel never recorded is
adopted; a change JetStream cannot make in place is refused. `stream_outcome`
turns the two into everything the operator reports: the action (a metric
label and log line), the Event, and the Ready condition.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from neurelay.jetstream.syncing import StreamOutcome

EventType = Literal["Normal", "Warning"]
Action = Literal[
    "created", "recreated", "updated", "drift-corrected", "adopted", "unchanged", "refused"
]


@dataclasses.dataclass(frozen=True)
class Event:
    type: EventType
    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What to report after a sync: `ready`/`reason`/`message` make the Ready condition."""

    action: Action
    ready: bool
    reason: str
    message: str
    event: Event | None
    event_on_change_only: bool = False
    """Post the Event only when the status changes: a refusal recurs on every drift check."""

    @property
    def changed_stream(self) -> bool:
        return self.action not in ("unchanged", "refused")


@dataclasses.dataclass(frozen=True)
class Recorded:
    """What the Channel's status said before this reconcile."""

    stream: bool
    """A stream was recorded (the Channel has created or adopted it before)."""

    same_spec: bool
    """The spec is the one last reconciled (observedGeneration is current) and had a stream."""


def stream_outcome(stream: str, sync: StreamOutcome, recorded: Recorded) -> Outcome:
    """Decide the action, Event and Ready condition for a sync of `stream`."""
    ready_message = f"stream {stream} matches the spec"
    if sync.action == "incompatible":
        message = f"{sync.problem}; revert the spec, or delete the stream to have it re-created"
        event = Event("Warning", "IncompatibleChange", message)
        return Outcome("refused", False, "IncompatibleChange", message, event, True)
    if sync.action == "created":
        if recorded.same_spec:
            event = Event("Warning", "StreamRecreated", f"stream {stream} was missing; re-created")
            return Outcome("recreated", True, "StreamReady", ready_message, event)
        event = Event("Normal", "StreamCreated", f"stream {stream} created")
        return Outcome("created", True, "StreamReady", ready_message, event)
    if sync.action == "updated":
        detail = sync.drift.describe() if sync.drift else ""
        if recorded.same_spec:
            event = Event(
                "Warning", "StreamDriftCorrected", f"stream {stream} changed back: {detail}"
            )
            return Outcome("drift-corrected", True, "StreamReady", ready_message, event)
        event = Event("Normal", "StreamUpdated", f"stream {stream} updated: {detail}")
        return Outcome("updated", True, "StreamReady", ready_message, event)
    if not recorded.stream:
        event = Event("Normal", "StreamAdopted", f"existing stream {stream} adopted")
        return Outcome("adopted", True, "StreamReady", ready_message, event)
    return Outcome("unchanged", True, "StreamReady", ready_message, None)
