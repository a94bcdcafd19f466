"""Context: what every reconcile shares, and the small steps all of them take.

One `Context` per operator process holds the settings, the Kubernetes and
NATS clients, the metrics, one lock per resource, the set of paused
resources, the `directory` of Channels and gateways, the watch of the
gateways' children and the coalesced gateway reconciles (`syncs`).
Around it: fetching an object worth reconciling (not gone, not being
deleted, not paused), noticing a resume from raw watch events (kopf
does not see annotation-only changes as updates), and writing status only
when it changes. Free of kopf: handlers turn `RetryLater` into
`kopf.TemporaryError`, and Events go through the `Notify` callback they pass.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel

from neurelay.errors import NeurelayError
from neurelay.jetstream.pool import NatsPool
from neurelay.operator import API_VERSION
from neurelay.operator import conditions as cond
from neurelay.operator.coalescing import Coalescer
from neurelay.operator.directory import Directory
from neurelay.operator.kube import Kube
from neurelay.operator.metrics import OperatorMetrics
from neurelay.operator.models import NatsConnection
from neurelay.operator.settings import PAUSED_ANNOTATION, OperatorSettings
from neurelay.operator.watching import ChildWatch

Body = Mapping[str, Any]
EventType = Literal["Normal", "Warning"]
Notify = Callable[[EventType, str, str], None]
Log = logging.Logger | logging.LoggerAdapter[Any]

GATEWAY = (API_VERSION, "RealtimeGateway")
CHANNEL = (API_VERSION, "Channel")


class RetryLater(NeurelayError):
    """The resource cannot be reconciled now (status already tells why); retry after `delay`."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


@dataclasses.dataclass
class Context:
    """What every reconcile needs; built once per operator process."""

    settings: OperatorSettings
    kube: Kube
    nats: NatsPool
    metrics: OperatorMetrics
    locks: dict[tuple[str, str, str], asyncio.Lock] = dataclasses.field(default_factory=dict)
    paused: set[tuple[str, str, str]] = dataclasses.field(default_factory=set)
    directory: Directory = dataclasses.field(default_factory=Directory)
    children: ChildWatch = dataclasses.field(default_factory=ChildWatch)
    # The NATS of each (namespace, gateway) last seen while releasing a Channel: a
    # Channel without a record, released after its siblings, can still be checked there.
    gateway_nats: dict[tuple[str, str], NatsConnection] = dataclasses.field(default_factory=dict)
    # Events about any object (kopf's, once the handlers are registered).
    notifier: Callable[[Body], Notify] = lambda body: no_events
    # Asks for gateway reconciles, coalesced (set up by `gateways.start_syncs`).
    syncs: Coalescer = dataclasses.field(init=False)

    def lock(self, kind: str, namespace: str, name: str) -> asyncio.Lock:
        return self.locks.setdefault((kind, namespace, name), asyncio.Lock())


def meta(body: Body) -> tuple[str, str, int]:
    """(namespace, name, generation) of an object."""
    metadata = body["metadata"]
    return metadata["namespace"], metadata["name"], int(metadata.get("generation", 0))


def is_paused(body: Body) -> bool:
    annotations = body.get("metadata", {}).get("annotations") or {}
    return str(annotations.get(PAUSED_ANNOTATION, "")).lower() == "true"


def resumed(ctx: Context, kind: str, body: Body) -> bool:
    """Track the pause annotation; True when a paused resource has just been resumed."""
    namespace, name, _ = meta(body)
    key = (kind, namespace, name)
    if is_paused(body):
        ctx.paused.add(key)
        return False
    if key in ctx.paused:
        ctx.paused.discard(key)
        return True
    return False


async def reconcilable(
    ctx: Context, kind: tuple[str, str], namespace: str, name: str, log: Log
) -> Body | None:
    """The object to reconcile, or None when it is gone, being deleted or paused."""
    body = await ctx.kube.get(*kind, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None
    if is_paused(body):
        log.info("%s %s/%s is paused; not reconciled", kind[1], namespace, name)
        ctx.metrics.reconciliations.labels(kind[1], "paused").inc()
        return None
    return body


def status_patch(status: BaseModel) -> dict[str, Any]:
    """The fields set on a typed status, as the API spells them (a partial status)."""
    patch: dict[str, Any] = status.model_dump(by_alias=True, exclude_unset=True, mode="json")
    return patch


async def write_status(ctx: Context, kind: tuple[str, str], body: Body, status: BaseModel) -> bool:
    """Merge the fields set on `status` into the object's status if that changes anything.

    True if written.
    """
    patch = status_patch(status)
    if not cond.status_changed(body.get("status") or {}, patch):
        return False
    namespace, name, _ = meta(body)
    await ctx.kube.patch_status(*kind, namespace, name, patch)
    return True


def no_events(event_type: EventType, reason: str, message: str) -> None:
    del event_type, reason, message
