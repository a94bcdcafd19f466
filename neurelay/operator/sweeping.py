"""The drift sweep: once per interval and gateway, every Channel checked against one stream listing.

Per gateway and interval the sweep asks JetStream once for the gateway's
streams (`STREAM.LIST` filtered by the gateway's subject prefix, 256 streams
a page) and compares, purely, each Channel the directory knows with that
listing: the stream it wants (`stream_drift`), the status it shows (Ready,
stream name, message and byte counts, observed generation) and the
governing Channel of its namespace. Only the Channels that differ are
reconciled, by the same reconcile as a spec change, which restores the
stream and reports what it changed. While NATS cannot be reached, the
Channels still saying Ready are reconciled, so their status says so. A
pass costs O(N) for N Channels and makes no Kubernetes request while
everything matches.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping

from neurelay.errors import BusUnavailable
from neurelay.jetstream.pool import NatsPool
from neurelay.jetstream.streams import desired_stream, stream_drift
from neurelay.jetstream.syncing import Stream, list_streams
from neurelay.operator.directory import ChannelEntry, Directory
from neurelay.operator.kube import Kube
from neurelay.operator.models import RealtimeGatewaySpec
from neurelay.operator.naming import subject_prefix
from neurelay.protocol.channels import stream_name


def stale_channels(
    entries: Iterable[ChannelEntry], prefix: str, streams: Mapping[str, Stream]
) -> list[str]:
    """Names of the Channels whose stream or status differs from what their spec asks for.

    `entries` are the Channels naming one gateway (deleting ones included:
    they still govern their namespace until they are gone), `streams` that
    gateway's streams by name. Deleting and paused Channels are not reported.
    """
    entries = list(entries)
    owners: dict[str, ChannelEntry] = {}
    for entry in sorted(entries, key=lambda entry: entry.age_key):
        owners.setdefault(entry.spec.namespace, entry)
    stale = []
    for entry in entries:
        if entry.deleting or entry.paused:
            continue
        if entry.observed_generation != entry.generation:
            stale.append(entry.name)
        elif owners[entry.spec.namespace] is not entry:
            if entry.reason != "Conflict":
                stale.append(entry.name)
        elif _owner_is_stale(entry, prefix, streams):
            stale.append(entry.name)
    return stale


def unaware_channels(entries: Iterable[ChannelEntry]) -> list[str]:
    """Names of the Channels that say Ready (not deleting, not paused): NATS went away."""
    return [e.name for e in entries if e.ready == "True" and not e.deleting and not e.paused]


def _owner_is_stale(entry: ChannelEntry, prefix: str, streams: Mapping[str, Stream]) -> bool:
    if entry.ready != "True":
        return True
    settings = entry.spec.settings()
    if not settings.keeps_history:
        name = stream_name(prefix, entry.spec.namespace)
        leftover = entry.spec.deletion_policy == "Delete" and name in streams
        return entry.reason != "NoHistory" or leftover
    desired = desired_stream(prefix, entry.spec.namespace, settings)
    actual = streams.get(desired.name or "")
    if actual is None or not stream_drift(desired, actual.config).in_sync:
        return True
    return (entry.stream, entry.messages, entry.bytes) != (
        desired.name,
        int(actual.state.messages or 0),
        int(actual.state.bytes or 0),
    )


async def sweep_gateway(
    *,
    kube: Kube,
    nats: NatsPool,
    directory: Directory,
    namespace: str,
    gateway: str,
    spec: RealtimeGatewaySpec,
    reconcile_channel: Callable[[str, str], Awaitable[None]],
) -> list[str]:
    """Reconcile the gateway's Channels that differ from the listing; their names."""
    entries = directory.channels(namespace, gateway)
    if not entries:
        return []
    credentials = None
    ref = spec.nats.credentials_secret
    if ref is not None:
        credentials = await kube.secret_value(namespace, ref.name, ref.key)
    prefix = subject_prefix(namespace, gateway)
    try:
        js = await nats.jetstream(spec.nats.url, credentials)
        stale = stale_channels(entries, prefix, await list_streams(js, f"{prefix}.s.>"))
    except BusUnavailable:
        # NATS is away: the Channels still saying Ready are reconciled, which reports it in
        # their status; the others already say so and wait for NATS to come back.
        stale = unaware_channels(entries)
    for name in stale:
        await reconcile_channel(namespace, name)
    return stale
