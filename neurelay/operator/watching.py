"""Watching what a gateway is made of: its children and the Secrets it mounts.

Every child the operator creates (ConfigMap, Deployment, Service, Ingress,
HorizontalPodAutoscaler, PodDisruptionBudget) carries the managed-by and
gateway labels, and the operator watches those kinds filtered by them.
`ChildWatch.observe` decides, purely, whether an event may mean the child
left its declared state: it was deleted, or its spec changed (a new
`metadata.generation`, or a new `resourceVersion` for kinds without one)
to something the operator did not write itself; status updates by
controllers are neither. Such an event asks for a reconcile of the gateway,
whose server-side apply restores the child; `applied` then records the
operator's own write and tells whether it really changed something
(an autoscaler's replica count is left alone, so it is not drift) and gives
the sentence for the Warning Event; an apply that had to take fields back
from another client (its conflict names the client) is drift even when the
watch batched that client's change away. Server-side apply leaves fields another
client added; when those make the declared object invalid (a second port
named `http`), the API refuses the apply and `replace` lets the reconcile
delete the child and create it afresh.

A Secret the gateway mounts (JWT key, NATS credentials) changing asks for
the same reconcile, which puts the new content's digest into the pod
template and so rolls the gateway pods: gateways read these files at start.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from neurelay.operator.kube import FIELD_MANAGER

Body = Mapping[str, Any]
ChildKey = tuple[str, str, str]


def child_key(body: Body) -> ChildKey:
    meta = body.get("metadata") or {}
    return (str(body.get("kind", "")), str(meta.get("namespace", "")), str(meta.get("name", "")))


def _marker(body: Body) -> str:
    """What changes when the spec (not the status) changes."""
    meta = body.get("metadata") or {}
    generation = meta.get("generation")
    return f"g{generation}" if generation else f"r{meta.get('resourceVersion', '')}"


def _latest_manager(body: Body) -> str:
    """The field manager of the latest change outside the status, another client's in a tie.

    managedFields tell whole seconds only, so an edit in the second of the
    operator's own apply ties with it; taking the other client then asks
    for a check whose apply, if it changes nothing, reports nothing.
    """
    entries = [
        entry
        for entry in (body.get("metadata") or {}).get("managedFields") or []
        if entry.get("subresource") != "status"
    ]
    if not entries:
        return ""
    latest = max(str(entry.get("time", "")) for entry in entries)
    managers = {str(entry.get("manager", "")) for entry in entries if entry.get("time") == latest}
    return min(managers - {FIELD_MANAGER} or managers)


def last_writer(body: Body) -> str:
    """The field manager other than the operator that last changed the object (or '')."""
    entries = [
        entry
        for entry in (body.get("metadata") or {}).get("managedFields") or []
        if entry.get("subresource") != "status" and entry.get("manager") != FIELD_MANAGER
    ]
    if not entries:
        return ""
    latest = max(entries, key=lambda entry: (str(entry.get("time", "")), str(entry.get("manager"))))
    return str(latest.get("manager", ""))


@dataclasses.dataclass(frozen=True)
class _Suspect:
    marker: str | None  # None: deleted
    writer: str
    replaced: bool = False


class ChildWatch:
    """Per child, the spec marker last seen and the changes not yet restored."""

    def __init__(self) -> None:
        self._markers: dict[ChildKey, str] = {}
        self._ours: dict[ChildKey, str] = {}
        self._suspects: dict[ChildKey, _Suspect] = {}
        self._replacing: set[ChildKey] = set()

    def observe(self, event_type: str | None, body: Body) -> bool:
        """Record a watch event of a child; True when its gateway should be reconciled."""
        key = child_key(body)
        if event_type == "DELETED":
            self._markers.pop(key, None)
            self._ours.pop(key, None)
            if key in self._replacing:
                self._replacing.discard(key)  # the operator's own deletion
                return False
            self._suspects[key] = _Suspect(None, "")
            return True
        marker = _marker(body)
        previous = self._markers.get(key)
        self._markers[key] = marker
        if previous is None:
            # First sight (the operator starting, or a watch that lags): drift if another
            # client wrote last, which the watch may have shown as this child's first event.
            if _latest_manager(body) in ("", FIELD_MANAGER):
                return False
        elif marker in (previous, self._ours.get(key)):
            return False  # status only, or the operator's own write
        self._suspects[key] = _Suspect(marker, last_writer(body))
        return True

    def applied(self, applied: Body, overwritten: str | None = None) -> str | None:
        """Record the operator's own write; what it repaired as a sentence, or None.

        `overwritten` names the clients whose values the apply took back
        (from its conflict), which is drift even when the watch never showed
        their change: events of one object arriving together are batched.
        """
        key = child_key(applied)
        before = self._ours.get(key)
        self._ours[key] = _marker(applied)
        suspect = self._suspects.pop(key, None)
        title = f"{key[0]} {key[2]}"
        if overwritten:
            return f"{title} had been changed by {overwritten}; restored"
        if suspect is None:
            return None
        if suspect.marker is None:
            return f"{title} had been deleted; re-created"
        if suspect.replaced:
            return (
                f"{title} had been changed by {suspect.writer or 'another client'} so that the "
                "declared object could not be applied over it; replaced"
            )
        if _marker(applied) in (suspect.marker, before):
            # The apply changed nothing: not drift (an autoscaler's scaling), or drift an
            # earlier apply already restored and reported before the watch showed it.
            return None
        return f"{title} had been changed by {suspect.writer or 'another client'}; restored"

    def replace(self, manifest: Body) -> bool:
        """Whether a child the API refused to apply over was changed by someone else.

        If so, the caller deletes it and applies it afresh; the deletion's
        watch event is then the operator's own, not drift.
        """
        key = child_key(manifest)
        suspect = self._suspects.get(key)
        if suspect is None or suspect.marker is None:
            return False
        self._suspects[key] = dataclasses.replace(suspect, replaced=True)
        self._replacing.add(key)
        return True

    def missing(self, namespace: str, names: set[str]) -> list[str]:
        """Children of these names deleted and not re-created yet, as 'Kind name'."""
        return sorted(
            f"{kind} {name}"
            for (kind, ns, name), suspect in self._suspects.items()
            if ns == namespace and name in names and suspect.marker is None
        )
