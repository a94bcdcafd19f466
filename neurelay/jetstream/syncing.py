"""Creating, correcting, reading and deleting streams on a JetStream server.

`sync_stream` is the whole decision, for gateway and operator alike: create
a missing stream, leave an identical one, update one that differs in fields
JetStream can change in place, and leave alone (reporting exactly which
fields) one that differs in a field it cannot change. The caller decides
what to do about an incompatible stream; nobody retries it, since the
server would refuse the same update forever. Errors arrive mapped:
`BusUnavailable` means retry later, any other `BusError` means JetStream
refused the request.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Literal

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import StreamConfig, StreamInfo

from neurelay.jetstream.errors import NATS_ERRORS, bus_error
from neurelay.jetstream.streams import StreamDrift, stream_drift

Action = Literal["created", "updated", "unchanged", "incompatible"]
# What callers hold to manage streams with, without importing nats-py themselves.
JetStream = JetStreamContext
Stream = StreamInfo
# JetStream answers STREAM.LIST with at most this many streams per request.
_LIST_PAGE = 256


@dataclasses.dataclass(frozen=True)
class StreamOutcome:
    """What `sync_stream` did; `info` is the stream as it now is, `drift` what differed."""

    action: Action
    info: StreamInfo
    drift: StreamDrift | None = None

    @property
    def problem(self) -> str | None:
        """Why the stream does not match, for a log line, an Event or a readiness answer."""
        if self.action != "incompatible" or self.drift is None:
            return None
        return (
            f"stream {self.info.config.name}: {self.drift.describe(self.drift.immutable)} "
            "cannot change in place"
        )


async def stream_info(js: JetStream, name: str) -> StreamInfo | None:
    """The stream as the server has it, or None when it does not exist."""
    try:
        return await js.stream_info(name)
    except nats.js.errors.NotFoundError:
        return None
    except NATS_ERRORS as e:
        raise bus_error(e, f"cannot read stream {name}") from e


async def sync_stream(js: JetStream, desired: StreamConfig) -> StreamOutcome:
    """Make the server's stream match `desired` where JetStream allows it."""
    name = desired.name or ""
    current = await stream_info(js, name)
    try:
        if current is None:
            return StreamOutcome("created", await js.add_stream(desired))
        drift = stream_drift(desired, current.config)
        if drift.in_sync:
            return StreamOutcome("unchanged", current)
        if not drift.compatible:
            return StreamOutcome("incompatible", current, drift)
        return StreamOutcome("updated", await js.update_stream(desired), drift)
    except NATS_ERRORS as e:
        raise bus_error(e, f"cannot set up stream {name}") from e


async def delete_stream(js: JetStream, name: str) -> bool:
    """Delete the stream; False when it did not exist."""
    try:
        return bool(await js.delete_stream(name))
    except nats.js.errors.NotFoundError:
        return False
    except NATS_ERRORS as e:
        raise bus_error(e, f"cannot delete stream {name}") from e


async def list_streams(js: JetStream, subject: str) -> dict[str, StreamInfo]:
    """Every stream holding subjects that overlap `subject` (e.g. `prefix.s.>`), by name.

    One request per 256 streams. nats-py's `streams_info` cannot filter by
    subject, so the request uses the JetStream API's own `subject` filter.
    """
    streams: dict[str, StreamInfo] = {}
    offset = 0
    while True:
        request = json.dumps({"offset": offset, "subject": subject}).encode()
        try:
            response = await js._api_request(
                f"{js._prefix}.STREAM.LIST", request, timeout=js._timeout
            )
        except NATS_ERRORS as e:
            raise bus_error(e, f"cannot list the streams of {subject}") from e
        page = response.get("streams") or []
        for item in page:
            info = StreamInfo.from_response(item)
            streams[info.config.name or ""] = info
        offset += len(page)
        if len(page) < _LIST_PAGE or offset >= int(response.get("total") or 0):
            return streams
