"""Stream sync on a real nats-server: drift is undone; what cannot be is named, never retried.

The table of fields JetStream refuses to change in place (`IMMUTABLE`) is
checked here against the server itself, so a server that starts allowing (or
refusing) a change shows up as a failing test rather than a stuck stream.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import nats
import nats.js.errors
import pytest
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig, StreamSource

from neurelay.config import NamespaceSettings
from neurelay.embedded import EmbeddedNats
from neurelay.errors import BusError, BusUnavailable
from neurelay.jetstream.streams import desired_stream, stream_drift
from neurelay.jetstream.syncing import delete_stream, stream_info, sync_stream
from tests.jetstream.test_stream_drift import DRIFTED


@pytest.fixture
async def js(shared_nats: EmbeddedNats) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(shared_nats.url)
    yield nc.jetstream(timeout=5)
    await nc.close()


def desired(prefix: str, **settings: Any) -> StreamConfig:
    return desired_stream(prefix, "agent", NamespaceSettings(**settings))


async def test_missing_stream_is_created_then_left_alone(js: JetStreamContext, prefix: str) -> None:
    config = desired(prefix, history_messages=10)
    created = await sync_stream(js, config)
    assert created.action == "created"
    assert stream_drift(config, created.info.config).in_sync
    again = await sync_stream(js, config)
    assert again.action == "unchanged"
    assert again.problem is None


async def test_max_msgs_set_to_7_behind_our_back_is_restored(
    js: JetStreamContext, prefix: str
) -> None:
    config = desired(prefix)
    await sync_stream(js, config)
    await js.update_stream(dataclasses.replace(config, max_msgs=7))
    outcome = await sync_stream(js, config)
    assert outcome.action == "updated"
    assert outcome.drift is not None
    assert outcome.drift.describe() == "max_msgs 7 -> -1"
    info = await stream_info(js, config.name or "")
    assert info is not None
    assert info.config.max_msgs == -1


# Changes a single server accepts on an existing stream, each undone by one sync.
IN_PLACE = [
    "description",
    "subjects",
    "max_consumers",
    "max_msgs",
    "max_bytes",
    "max_msg_size",
    "max_msgs_per_subject",
    "max_age",
    "discard",
    "no_ack",
    "duplicate_window",
    "retention",
    "allow_rollup_hdrs",
    "allow_direct",
    "mirror_direct",
    "republish",
]


@pytest.mark.parametrize("field", IN_PLACE)
async def test_each_field_drifted_on_the_server_is_restored(
    js: JetStreamContext, prefix: str, field: str
) -> None:
    config = desired(prefix)
    await sync_stream(js, config)
    value = DRIFTED[field]
    if field == "retention":
        value = RetentionPolicy.INTEREST  # work-queue retention cannot be undone (see below)
    elif field == "republish":
        value = dataclasses.replace(config.republish, headers_only=True)
    await js.update_stream(dataclasses.replace(config, **{field: value}))
    outcome = await sync_stream(js, config)
    assert outcome.action == "updated", outcome
    assert outcome.drift is not None
    assert outcome.drift.changed == (field,)
    info = await stream_info(js, config.name or "")
    assert info is not None
    assert stream_drift(config, info.config).in_sync


@pytest.mark.parametrize("field", ["deny_delete", "deny_purge", "sealed", "allow_msg_ttl"])
async def test_flags_the_server_will_not_clear_are_reported_not_updated(
    js: JetStreamContext, prefix: str, field: str
) -> None:
    config = desired(prefix)
    await sync_stream(js, config)
    await js.update_stream(dataclasses.replace(config, **{field: True}))
    outcome = await sync_stream(js, config)
    assert outcome.action == "incompatible"
    assert outcome.drift is not None
    assert field in outcome.drift.immutable
    assert f"{field} True -> False" in (outcome.problem or "")
    with pytest.raises(nats.js.errors.APIError):
        await js.update_stream(config)  # the server agrees: the update can never succeed


async def test_storage_change_is_reported_and_the_stream_left_as_it_is(
    js: JetStreamContext, prefix: str
) -> None:
    await sync_stream(js, desired(prefix))
    memory = desired(prefix, storage="memory")
    outcome = await sync_stream(js, memory)
    assert outcome.action == "incompatible"
    assert (
        outcome.problem
        == f"stream {memory.name}: storage 'file' -> 'memory' cannot change in place"
    )
    assert outcome.info.config.storage == StorageType.FILE
    with pytest.raises(nats.js.errors.APIError):
        await js.update_stream(memory)


async def test_work_queue_retention_cannot_be_changed_back(
    js: JetStreamContext, prefix: str
) -> None:
    config = desired(prefix)
    name = config.name or ""
    await js.add_stream(dataclasses.replace(config, retention=RetentionPolicy.WORK_QUEUE))
    outcome = await sync_stream(js, config)
    assert outcome.action == "incompatible"
    assert outcome.drift is not None
    assert outcome.drift.immutable == ("retention",)
    with pytest.raises(nats.js.errors.APIError):
        await js.update_stream(config)
    assert await delete_stream(js, name)


async def test_sources_added_on_the_server_are_removed(js: JetStreamContext, prefix: str) -> None:
    config = desired(prefix)
    other = desired_stream(prefix, "other", NamespaceSettings())
    await sync_stream(js, other)
    await sync_stream(js, config)
    await js.update_stream(dataclasses.replace(config, sources=[StreamSource(name=other.name)]))
    outcome = await sync_stream(js, config)
    assert outcome.action == "updated"
    info = await stream_info(js, config.name or "")
    assert info is not None
    assert not info.config.sources


async def test_a_configuration_the_server_refuses_is_a_bus_error_not_unavailable(
    js: JetStreamContext, prefix: str
) -> None:
    with pytest.raises(BusError) as refused:
        await sync_stream(js, desired(prefix, replicas=3))  # one server: no 3 replicas
    assert not isinstance(refused.value, BusUnavailable)
    assert "replicas" in str(refused.value)


async def test_delete_reports_whether_the_stream_existed(js: JetStreamContext, prefix: str) -> None:
    config = desired(prefix)
    await sync_stream(js, config)
    assert await delete_stream(js, config.name or "")
    assert not await delete_stream(js, config.name or "")
    assert await stream_info(js, config.name or "") is None


async def test_nats_gone_is_unavailable(own_nats: EmbeddedNats, prefix: str) -> None:
    nc = await nats.connect(own_nats.url, allow_reconnect=False)
    js = nc.jetstream(timeout=1)
    own_nats.stop()
    try:
        with pytest.raises(BusUnavailable):
            await sync_stream(js, desired(prefix))
    finally:
        await nc.close()
