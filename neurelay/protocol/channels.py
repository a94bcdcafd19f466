"""Channel grammar and the mapping of channels onto NATS subjects and streams.

A channel is `system` or `<namespace>:<id>`; namespace `[a-z][a-z0-9-]{0,31}`,
id `[A-Za-z0-9_-]{1,128}`. The grammar admits no character that means anything
to NATS (no `.`, `*`, `>` or white space), so a parsed channel is always safe
to turn into a subject. Subjects live under a per-gateway prefix:

    stored (JetStream stream subjects)   <prefix>.s.<namespace>.<id>
    live   (republished, core NATS)      <prefix>.l.<namespace>.<id>

`system` maps to `<prefix>.s.system` and `<prefix>.l.system`. The two trees
never overlap, whatever namespaces are configured.
"""

from __future__ import annotations

import dataclasses
import functools
import re

from neurelay.errors import ProtocolError
from neurelay.protocol.codes import ErrorCode

SYSTEM = "system"
MAX_CHANNEL_LENGTH = 32 + 1 + 128

_NAMESPACE = re.compile(r"[a-z][a-z0-9-]{0,31}")
_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_PREFIX = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclasses.dataclass(frozen=True, slots=True)
class Channel:
    """A parsed, valid channel name; `id` is None only for `system`."""

    namespace: str
    id: str | None

    @property
    def name(self) -> str:
        return self.namespace if self.id is None else f"{self.namespace}:{self.id}"

    def __str__(self) -> str:
        return self.name


def is_valid_namespace(namespace: str) -> bool:
    return _NAMESPACE.fullmatch(namespace) is not None


def is_valid_prefix(prefix: str) -> bool:
    return _PREFIX.fullmatch(prefix) is not None


def parse_channel(raw: object) -> Channel:
    """Parse a channel name or raise `ProtocolError(invalid_channel)`."""
    if not isinstance(raw, str):
        raise ProtocolError(ErrorCode.INVALID_CHANNEL, "channel must be a string")
    return _parse_name(raw)


# Parsed for every frame: a client names few channels, each parsed once (refusals are not kept).
@functools.lru_cache(maxsize=4096)
def _parse_name(raw: str) -> Channel:
    if len(raw) > MAX_CHANNEL_LENGTH:
        raise ProtocolError(
            ErrorCode.INVALID_CHANNEL, f"channel is longer than {MAX_CHANNEL_LENGTH} characters"
        )
    if raw == SYSTEM:
        return Channel(SYSTEM, None)
    namespace, sep, ident = raw.partition(":")
    if not sep:
        raise ProtocolError(
            ErrorCode.INVALID_CHANNEL,
            "channel must be 'system' or '<namespace>:<id>'",
            channel=raw,
        )
    if namespace == SYSTEM or _NAMESPACE.fullmatch(namespace) is None:
        raise ProtocolError(
            ErrorCode.INVALID_CHANNEL,
            "namespace must match [a-z][a-z0-9-]{0,31} and must not be 'system'",
            channel=raw,
        )
    if _ID.fullmatch(ident) is None:
        raise ProtocolError(
            ErrorCode.INVALID_CHANNEL, "channel id must match [A-Za-z0-9_-]{1,128}", channel=raw
        )
    return Channel(namespace, ident)


def stored_subject(prefix: str, channel: Channel) -> str:
    return _subject(prefix, "s", channel)


def live_subject(prefix: str, channel: Channel) -> str:
    return _subject(prefix, "l", channel)


def _subject(prefix: str, tree: str, channel: Channel) -> str:
    if channel.id is None:
        return f"{prefix}.{tree}.{channel.namespace}"
    return f"{prefix}.{tree}.{channel.namespace}.{channel.id}"


def stream_name(prefix: str, namespace: str) -> str:
    """The JetStream stream holding a namespace's history for one gateway prefix."""
    return f"{prefix}_{namespace}"


def stream_subjects(prefix: str, namespace: str) -> tuple[str, str]:
    """(stored subject filter, republish destination) of a namespace's stream."""
    if namespace == SYSTEM:
        return f"{prefix}.s.{SYSTEM}", f"{prefix}.l.{SYSTEM}"
    return f"{prefix}.s.{namespace}.*", f"{prefix}.l.{namespace}.{{{{wildcard(1)}}}}"
