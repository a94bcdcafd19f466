"""Directory: what the operator knows of every Channel and RealtimeGateway without asking the API.

kopf keeps in-memory indexes, filled from its watches before any handler
runs and updated before each event's handlers; `index_channel` and
`index_gateway` say what goes in them. `Directory` answers from those
indexes the questions every reconcile asks — which Channel governs a channel
namespace, which Channels a gateway serves, which gateways mount a Secret —
in time proportional to the answer, where listing every Channel of the
namespace for each Channel made a drift pass O(N²).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import pydantic

from neurelay.operator.election import channel_owner, served_channels
from neurelay.operator.models import ChannelSpec, RealtimeGatewaySpec
from neurelay.operator.settings import PAUSED_ANNOTATION
from neurelay.operator.workloads import secret_refs

Body = Mapping[str, Any]
# kopf's index: key -> the values of every object filed under that key.
Index = Mapping[Any, Iterable[Any]]


@dataclasses.dataclass(frozen=True)
class ChannelEntry:
    """One Channel as last seen by the watch: identity, parsed spec and a summary of its status."""

    namespace: str
    name: str
    created: str
    deleting: bool
    paused: bool
    generation: int
    spec: ChannelSpec
    observed_generation: int | None
    ready: str
    reason: str
    stream: str
    messages: int
    bytes: int

    @property
    def age_key(self) -> tuple[str, str]:
        """Older first (creation time), then by name for the same second."""
        return (self.created, self.name)


def _claim_key(namespace: str, gateway: str, channel_namespace: str) -> tuple[str, ...]:
    return ("claim", namespace, gateway, channel_namespace)


def _gateway_key(namespace: str, gateway: str) -> tuple[str, ...]:
    return ("gateway", namespace, gateway)


def _secret_key(namespace: str, secret: str) -> tuple[str, ...]:
    return ("secret", namespace, secret)


def index_channel(body: Body) -> dict[tuple[str, ...], ChannelEntry]:
    """The index entries of one Channel (none when its spec does not validate)."""
    meta = body.get("metadata") or {}
    try:
        spec = ChannelSpec.model_validate(body.get("spec") or {})
    except pydantic.ValidationError:
        return {}
    status = body.get("status") or {}
    ready: Mapping[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {}
    )
    annotations = meta.get("annotations") or {}
    observed = status.get("observedGeneration")
    entry = ChannelEntry(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        created=str(meta.get("creationTimestamp", "")),
        deleting=bool(meta.get("deletionTimestamp")),
        paused=str(annotations.get(PAUSED_ANNOTATION, "")).lower() == "true",
        generation=int(meta.get("generation") or 0),
        spec=spec,
        observed_generation=int(observed) if observed is not None else None,
        ready=str(ready.get("status", "")),
        reason=str(ready.get("reason", "")),
        stream=str(status.get("stream") or ""),
        messages=int(status.get("messages") or 0),
        bytes=int(status.get("bytes") or 0),
    )
    return {
        _claim_key(entry.namespace, spec.gateway, spec.namespace): entry,
        _gateway_key(entry.namespace, spec.gateway): entry,
    }


def index_gateway(body: Body) -> dict[tuple[str, ...], str]:
    """The index entries of one RealtimeGateway: the Secrets it mounts -> its name."""
    meta = body.get("metadata") or {}
    try:
        spec = RealtimeGatewaySpec.model_validate(body.get("spec") or {})
    except pydantic.ValidationError:
        return {}
    namespace = str(meta.get("namespace", ""))
    return {
        _secret_key(namespace, ref.name): str(meta.get("name", ""))
        for ref in secret_refs(spec).values()
    }


class Directory:
    """Read-only questions over kopf's indexes; `bind` them once the operator has started."""

    def __init__(self) -> None:
        self._channels: Index = {}
        self._gateways: Index = {}

    def bind(self, channels: Index, gateways: Index) -> None:
        self._channels = channels
        self._gateways = gateways

    def owner(
        self, namespace: str, gateway: str, channel_namespace: str, *, include_deleting: bool
    ) -> str | None:
        """Name of the Channel governing (gateway, channel namespace) (see `election`)."""
        claimants = self._channels.get(_claim_key(namespace, gateway, channel_namespace), ())
        return channel_owner(claimants, include_deleting=include_deleting)

    def channels(self, namespace: str, gateway: str) -> list[ChannelEntry]:
        """Every Channel naming `gateway`, deleting ones included, oldest first."""
        entries = list(self._channels.get(_gateway_key(namespace, gateway), ()))
        return sorted(entries, key=lambda entry: entry.age_key)

    def served(self, namespace: str, gateway: str) -> list[ChannelSpec]:
        """The governing Channel of each channel namespace of `gateway` (see `election`)."""
        return served_channels(self._channels.get(_gateway_key(namespace, gateway), ()))

    def gateways_mounting(self, namespace: str, secret: str) -> set[str]:
        """Names of the gateways in `namespace` that mount Secret `secret`."""
        return set(self._gateways.get(_secret_key(namespace, secret), ()))
