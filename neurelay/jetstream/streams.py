"""The stream a channel namespace needs, and how a stream on the server differs from it (pure).

`desired_stream` is shared by the gateway (which manages streams itself when
`nats.manage_streams` is on) and the operator (which owns them otherwise), so
both agree on names, subjects, retention and republishing. Each stored
message is republished to the namespace's live subject tree with its stream
sequence and the previous sequence of the same channel in headers; gateways
follow channels through those cheap core subscriptions and repair any gap
from the stream.

The desired configuration spells out every field Neurelay sets or relies on
(a limit nobody set is still a limit the gateway relies on being absent), and
`stream_drift` compares all of them with what JetStream reports, after
normalising the server's spelling of defaults. Fields JetStream fills in on
its own and Neurelay does not rely on (placement, compression, metadata,
first sequence, consumer limits) are not compared. Some differences cannot be
undone by an in-place update (`IMMUTABLE`: the server refuses, e.g. a
storage change, or a deny-delete flag once set); they make the stream
incompatible, and the caller reports them instead of retrying an update the
server will refuse forever.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import Any

from nats.js.api import DiscardPolicy, RePublish, RetentionPolicy, StorageType, StreamConfig

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
        retention=RetentionPolicy.LIMITS,
        # History is bounded per channel (subject) and by age only; a stream-wide
        # limit would let one busy channel evict every other channel's history.
        max_consumers=-1,
        max_msgs=-1,
        max_bytes=-1,
        max_msg_size=-1,
        max_msgs_per_subject=settings.history_messages,
        max_age=settings.history_max_age_seconds or None,
        discard=DiscardPolicy.OLD,
        discard_new_per_subject=False,
        storage=StorageType.FILE if settings.storage == "file" else StorageType.MEMORY,
        num_replicas=settings.replicas,
        # Publishers wait for the stream's ack: that is what "acknowledged" means.
        no_ack=False,
        # JetStream refuses a de-duplication window longer than the stream's max age.
        duplicate_window=min(DUPLICATE_WINDOW_SECONDS, settings.history_max_age_seconds)
        if settings.history_max_age_seconds
        else DUPLICATE_WINDOW_SECONDS,
        sealed=False,
        deny_delete=False,
        deny_purge=False,
        allow_rollup_hdrs=False,
        # Replays read history with direct gets.
        allow_direct=True,
        mirror_direct=False,
        allow_msg_ttl=False,
        republish=RePublish(src=stored, dest=live),
    )


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def _limit(value: int | None) -> int:
    """JetStream spells "no limit" -1 (and an absent field means the same)."""
    return -1 if value is None or value <= 0 else value


def _seconds(value: float | None) -> float:
    return round(float(value or 0.0), 3)


def _republish(config: StreamConfig) -> tuple[str, str, bool] | None:
    r = config.republish
    return None if r is None else (r.src or "", r.dest or "", bool(r.headers_only))


def _mirror(config: StreamConfig) -> str | None:
    return None if config.mirror is None else str(config.mirror.name)


def _sources(config: StreamConfig) -> list[str]:
    return sorted(str(source.name) for source in config.sources or [])


def _transform(config: StreamConfig) -> tuple[str, str] | None:
    t = config.subject_transform
    return None if t is None else (t.src, t.dest)


# Every compared field, read from a StreamConfig with the server's defaults spelled one way.
FIELDS: dict[str, Callable[[StreamConfig], Any]] = {
    "description": lambda c: c.description or "",
    "subjects": lambda c: sorted(c.subjects or []),
    "retention": lambda c: _plain(c.retention) or "limits",
    "max_consumers": lambda c: _limit(c.max_consumers),
    "max_msgs": lambda c: _limit(c.max_msgs),
    "max_bytes": lambda c: _limit(c.max_bytes),
    "max_msg_size": lambda c: _limit(c.max_msg_size),
    "max_msgs_per_subject": lambda c: _limit(c.max_msgs_per_subject),
    "max_age": lambda c: _seconds(c.max_age),
    "discard": lambda c: _plain(c.discard) or "old",
    "discard_new_per_subject": lambda c: bool(c.discard_new_per_subject),
    "storage": lambda c: _plain(c.storage) or "file",
    "num_replicas": lambda c: c.num_replicas or 1,
    "no_ack": lambda c: bool(c.no_ack),
    "duplicate_window": lambda c: _seconds(c.duplicate_window),
    "mirror": _mirror,
    "sources": _sources,
    "sealed": lambda c: bool(c.sealed),
    "deny_delete": lambda c: bool(c.deny_delete),
    "deny_purge": lambda c: bool(c.deny_purge),
    "allow_rollup_hdrs": lambda c: bool(c.allow_rollup_hdrs),
    "allow_direct": lambda c: bool(c.allow_direct),
    "mirror_direct": lambda c: bool(c.mirror_direct),
    "allow_msg_ttl": lambda c: bool(c.allow_msg_ttl),
    "subject_transform": _transform,
    "republish": _republish,
}

# Differences JetStream refuses to undo in place, as (field, is_refused(actual, desired)).
IMMUTABLE: dict[str, Callable[[Any, Any], bool]] = {
    "storage": lambda actual, desired: True,
    "retention": lambda actual, desired: "workqueue" in (actual, desired),
    "mirror": lambda actual, desired: True,
    "sealed": lambda actual, desired: bool(actual),
    "deny_delete": lambda actual, desired: bool(actual),
    "deny_purge": lambda actual, desired: bool(actual),
    "allow_msg_ttl": lambda actual, desired: bool(actual),
}


@dataclasses.dataclass(frozen=True)
class StreamDrift:
    """What differs: `changed` fields (all), of which `immutable` cannot change in place.

    `details` maps each changed field to (desired, actual), normalised.
    """

    changed: tuple[str, ...]
    immutable: tuple[str, ...]
    details: dict[str, tuple[Any, Any]]

    @property
    def in_sync(self) -> bool:
        return not self.changed

    @property
    def compatible(self) -> bool:
        """True when an in-place update can bring the stream to the desired configuration."""
        return not self.immutable

    def describe(self, fields: tuple[str, ...] | None = None) -> str:
        """`field actual -> desired, ...` for the given fields (all changed ones by default)."""
        shown = self.changed if fields is None else fields
        return ", ".join(
            f"{name} {self.details[name][1]!r} -> {self.details[name][0]!r}" for name in shown
        )


def normalised(config: StreamConfig) -> dict[str, Any]:
    """The compared fields of `config`, with server defaults spelled one way."""
    return {name: read(config) for name, read in FIELDS.items()}


def stream_drift(desired: StreamConfig, actual: StreamConfig) -> StreamDrift:
    want, have = normalised(desired), normalised(actual)
    changed = tuple(name for name in FIELDS if want[name] != have[name])
    immutable = tuple(
        name for name in changed if name in IMMUTABLE and IMMUTABLE[name](have[name], want[name])
    )
    return StreamDrift(
        changed=changed,
        immutable=immutable,
        details={name: (want[name], have[name]) for name in changed},
    )
