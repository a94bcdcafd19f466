"""Outcomes: what a stream sync means for a Channel, decided purely.

`sync_stream` says what it did on the server (created, updated, unchanged,
incompatible). What that means depends on what the Channel had recorded
before: a stream missing although the Channel had it in sync with the
current spec was deleted behind its back (re-created); an update under such
a spec undoes drift (drift-corrected, the Event names each field changed
back); an existing stream the Channel never recorded is adopted; a change
JetStream cannot make in place is refused, and the message says whether the
spec or the server changed. `stream_outcome`
turns the two into everything the operator reports: the action (a metric
label and log line), the Event, and the Ready condition.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

from neurelay.jetstream.syncing import StreamOutcome

READY_REASON = "StreamReady"
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

    in_sync: bool
    """The spec is the one last reconciled, and the stream matched it then (Ready)."""


def recorded(status: Mapping[str, Any], generation: int) -> Recorded:
    """Read `Recorded` from a Channel's status as the API returns it."""
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    return Recorded(
        stream=bool(status.get("stream")),
        in_sync=bool(status.get("stream"))
        and status.get("observedGeneration") == generation
        and ready is not None
        and ready.get("status") == "True"
        and ready.get("reason") == READY_REASON,
    )


def stream_outcome(stream: str, sync: StreamOutcome, before: Recorded) -> Outcome:
    """Decide the action, Event and Ready condition for a sync of `stream`."""
    ready_message = f"stream {stream} matches the spec"
    if sync.action == "incompatible":
        if before.in_sync:
            message = (
                f"{sync.problem}: it was changed on the server, not in the spec; delete the "
                "stream (its messages go with it) to have it re-created"
            )
        else:
            message = f"{sync.problem}; revert the spec, or delete the stream to have it re-created"
        event = Event("Warning", "IncompatibleChange", message)
        return Outcome("refused", False, "IncompatibleChange", message, event, True)
    if sync.action == "created":
        if before.in_sync:
            event = Event("Warning", "StreamRecreated", f"stream {stream} was missing; re-created")
            return Outcome("recreated", True, READY_REASON, ready_message, event)
        event = Event("Normal", "StreamCreated", f"stream {stream} created")
        return Outcome("created", True, READY_REASON, ready_message, event)
    if sync.action == "updated":
        detail = sync.drift.describe() if sync.drift else ""
        if before.in_sync:
            message = f"stream {stream} was changed on the server; changed back: {detail}"
            event = Event("Warning", "StreamDriftCorrected", message)
            return Outcome("drift-corrected", True, READY_REASON, ready_message, event)
        event = Event("Normal", "StreamUpdated", f"stream {stream} updated: {detail}")
        return Outcome("updated", True, READY_REASON, ready_message, event)
    if not before.stream:
        event = Event("Normal", "StreamAdopted", f"existing stream {stream} adopted")
        return Outcome("adopted", True, READY_REASON, ready_message, event)
    return Outcome("unchanged", True, READY_REASON, ready_message, None)
