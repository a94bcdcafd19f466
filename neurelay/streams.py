"""The JetStream stream a channel namespace needs, computed from its settings.

Shared by the gateway (which creates streams itself when
`nats.manage_streams` is on) and the operator (which owns them otherwise), so
both always agree on names, subjects, retention and republishing. Each stored
message is republished to the namespace's live subject tree with its stream
sequence and the previous sequence of the same channel in headers; gateways
follow channels through those cheap core subscriptions and repair any gap
from the stream.
"""

from __future__ import annotations

from nats.js.api import DiscardPolicy, RePublish, StorageType, StreamConfig

from neurelay.config import NamespaceSettings
from neurelay.protocol.channels import stream_name, stream_subjects

# JetStream drops a repeated `Nats-Msg-Id` seen within this window.
DUPLICATE_WINDOW_SECONDS = 120.0


def desired_stream(prefix: str, namespace: str, settings: NamespaceSettings) -> StreamConfig:
    stored, live = stream_subjects(prefix, namespace)
    return StreamConfig(
        name=stream_name(prefix, namespace),
        description=f"Neurelay history of namespace {namespace!r} (prefix {prefix!r})",
        subjects=[stored],
        max_msgs_per_subject=settings.history_messages,
        max_age=settings.history_max_age_seconds or None,
        storage=StorageType.FILE if settings.storage == "file" else StorageType.MEMORY,
        num_replicas=settings.replicas,
        discard=DiscardPolicy.OLD,
        # JetStream refuses a de-duplication window longer than the stream's max age.
        duplicate_window=min(DUPLICATE_WINDOW_SECONDS, settings.history_max_age_seconds)
        if settings.history_max_age_seconds
        else DUPLICATE_WINDOW_SECONDS,
        allow_direct=True,
        republish=RePublish(src=stored, dest=live),
    )
