"""Drift between the JetStream stream a Channel wants and the one the server has, computed purely.

Only the fields `neurelay.streams.desired_stream` sets are compared, after
normalising the server's spelling of defaults (no age limit is `0` there,
`None` here; replicas `None` means 1). A difference in a field JetStream
cannot change in place (storage, retention) makes the stream incompatible:
the operator reports it instead of retrying an update the server refuses.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from nats.js.api import StreamConfig

# Fields JetStream refuses to change on an existing stream.
IMMUTABLE_FIELDS = ("storage", "retention")
COMPARED_FIELDS = (
    "description",
    "subjects",
    "max_msgs_per_subject",
    "max_age",
    "storage",
    "retention",
    "num_replicas",
    "discard",
    "duplicate_window",
    "allow_direct",
    "republish",
)


@dataclasses.dataclass(frozen=True)
class StreamDrift:
    """What differs: `changed` fields (all), of which `immutable` cannot change in place."""

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
        shown = self.changed if fields is None else fields
        return ", ".join(
            f"{name} {self.details[name][1]!r} -> {self.details[name][0]!r}" for name in shown
        )


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def normalised(config: StreamConfig) -> dict[str, Any]:
    """The compared fields of `config`, with server defaults spelled one way."""
    republish = config.republish
    return {
        "description": config.description or "",
        "subjects": sorted(config.subjects or []),
        "max_msgs_per_subject": config.max_msgs_per_subject,
        "max_age": round(float(config.max_age or 0.0), 3),
        "storage": _plain(config.storage) or "file",
        "retention": _plain(config.retention) or "limits",
        "num_replicas": config.num_replicas or 1,
        "discard": _plain(config.discard) or "old",
        "duplicate_window": round(float(config.duplicate_window or 0.0), 3),
        "allow_direct": bool(config.allow_direct),
        "republish": None
        if republish is None
        else (republish.src, republish.dest, bool(republish.headers_only)),
    }


def stream_drift(desired: StreamConfig, actual: StreamConfig) -> StreamDrift:
    want, have = normalised(desired), normalised(actual)
    changed = tuple(name for name in COMPARED_FIELDS if want[name] != have[name])
    return StreamDrift(
        changed=changed,
        immutable=tuple(name for name in changed if name in IMMUTABLE_FIELDS),
        details={name: (want[name], have[name]) for name in changed},
    )
