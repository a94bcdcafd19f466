"""The gateway's own stream set-up (`nats.manage_streams`): drift undone, the impossible reported.

A configuration JetStream can never apply to an existing stream (a storage
change) must not keep the gateway retrying forever: set-up finishes, the
existing stream keeps serving, and readiness, an ERROR log line and a metric
say which stream and which field, until the configuration is put right.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import orjson
import pytest
from nats.js import JetStreamContext

from neurelay.config import GatewayConfig, NamespaceSettings, _default_namespaces
from neurelay.embedded import EmbeddedNats
from neurelay.gateway import reloading
from neurelay.jetstream.streams import desired_stream
from tests.conftest import SECRET

pytestmark = pytest.mark.timeout(60)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def bus_log() -> Iterator[Records]:
    records = Records()
    logger = logging.getLogger("neurelay.gateway.bus")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(records)
    yield records
    logger.removeHandler(records)
    logger.setLevel(level)


@pytest.fixture
async def js(shared_nats: EmbeddedNats) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(shared_nats.url)
    yield nc.jetstream()
    await nc.close()


def namespaces(**agent: Any) -> dict[str, Any]:
    data = {name: s.model_dump() for name, s in _default_namespaces().items()}
    data["agent"] = {**data["agent"], **agent}
    return data


def config_file(tmp_path: Path, config: GatewayConfig, **agent: Any) -> Path:
    data = config.model_dump(mode="json")
    data["auth"]["secret"] = SECRET
    data["namespaces"] = namespaces(**agent)
    path = tmp_path / "gateway.json"
    path.write_bytes(orjson.dumps(data))
    return path


async def readiness(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url + "/readyz") as response:
        return response.status, (await response.json())["status"]


async def test_a_storage_change_is_reported_by_readiness_log_and_metric_not_retried(
    make_config,
    gateway_factory,
    connect,
    token,
    js: JetStreamContext,
    prefix,
    tmp_path,
    bus_log,
):
    existing = desired_stream(prefix, "agent", NamespaceSettings(history_messages=100))
    await js.add_stream(existing)
    await js.publish(f"{prefix}.s.agent.kept", b'{"p": "kept"}')

    config = make_config(namespaces=namespaces(storage="memory"))
    # Returns only once set-up has finished: a retry loop would time out here.
    running = await gateway_factory(config)

    status, reason = await readiness(running.http_url)
    assert status == 503
    assert f"stream {existing.name}: storage 'file' -> 'memory' cannot change in place" in reason
    assert b"neurelay_streams_refused 1.0" in running.gateway.metrics.exposition()
    errors = [r for r in bus_log.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "storage 'file' -> 'memory'" in errors[0].getMessage()

    # The stream is left as it is and keeps serving.
    info = await js.stream_info(existing.name or "")
    assert (info.config.storage, info.state.messages) == ("file", 1)
    client = await connect(running.ws_url, token())
    published = await client.request({"type": "publish", "channel": "agent:a", "payload": 1})
    assert published["type"] == "published"

    # Putting the configuration right clears the report.
    assert await reloading.apply(running.gateway, config_file(tmp_path, config, storage="file"))
    assert await readiness(running.http_url) == (200, "ready")
    assert b"neurelay_streams_refused 0.0" in running.gateway.metrics.exposition()


async def test_a_stream_drifted_on_the_server_is_restored_at_set_up(
    make_config, gateway_factory, js, prefix, bus_log
):
    desired = desired_stream(prefix, "agent", NamespaceSettings(history_messages=100))
    await js.add_stream(dataclasses.replace(desired, max_msgs=7, max_msgs_per_subject=3))

    running = await gateway_factory(make_config())

    info = await js.stream_info(desired.name or "")
    assert (info.config.max_msgs, info.config.max_msgs_per_subject) == (-1, 100)
    assert await readiness(running.http_url) == (200, "ready")
    restored = [r.getMessage() for r in bus_log.records if "updated" in r.getMessage()]
    assert restored == [
        f"stream {desired.name} updated: max_msgs 7 -> -1, max_msgs_per_subject 3 -> 100"
    ]


async def test_publishing_where_no_stream_answers_is_unavailable_not_internal(
    make_config, gateway_factory, connect, token
):
    # The operator owns the streams and has not created this one (yet): JetStream says
    # "no response from stream", exactly as while a stream's leader is being elected.
    running = await gateway_factory(make_config(nats={"manage_streams": False}))
    client = await connect(running.ws_url, token())
    refused = await client.request({"type": "publish", "channel": "agent:a", "payload": 1})
    assert refused["type"] == "error"
    assert refused["code"] == "unavailable"


async def test_a_stream_jetstream_refuses_to_create_is_reported_not_retried(
    make_config, gateway_factory, bus_log
):
    # Three replicas on a single server: JetStream refuses, and would refuse every retry.
    running = await gateway_factory(make_config(namespaces=namespaces(replicas=3)))
    status, reason = await readiness(running.http_url)
    assert status == 503
    assert "replicas" in reason
    assert b"neurelay_streams_refused 1.0" in running.gateway.metrics.exposition()
    assert [r.levelno for r in bus_log.records].count(logging.ERROR) == 1


async def test_the_dedup_window_is_two_minutes_or_the_shorter_history_age_as_documented(
    gateway_factory, make_config, js, prefix
):
    await gateway_factory(
        make_config(namespaces=namespaces(history_max_age_seconds=30.0)),
    )
    agent = await js.stream_info(f"{prefix}_agent")
    conversation = await js.stream_info(f"{prefix}_conversation")
    assert (agent.config.duplicate_window, conversation.config.duplicate_window) == (30.0, 120.0)
    protocol = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    section = protocol.split("### De-duplication", 1)[1].split("\n## ", 1)[0]
    assert "two minutes" in section
    assert "`history_max_age_seconds`" in section
