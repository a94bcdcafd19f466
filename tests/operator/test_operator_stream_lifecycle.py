"""A Channel's stream stays as declared, and goes with the Channel whatever the deletion order.

Against the real API server, the running operator and real JetStream:
drift in any field is undone within a drift interval and an Event names
what was changed back; a `deletionPolicy: Delete` stream is deleted even
when its gateway went first (the Channel records the NATS it reconciled
with); a stream that cannot be deleted holds the Channel, with a Warning
Event and a condition saying why, until an annotation lets it go.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from nats.js.api import DiscardPolicy, StreamConfig

from neurelay.embedded import EmbeddedNats
from neurelay.operator.naming import subject_prefix
from neurelay.operator.settings import ABANDON_STREAM_ANNOTATION
from neurelay.protocol.channels import stream_subjects
from tests.jetstream.test_pool import CREDS
from tests.operator.conftest import Cluster, JetStream, channel, eventually, gateway, secret

CH = "channel"
GW = "realtimegateway"


def stream(ns: str, namespace: str) -> str:
    return f"{ns}_edge_{namespace}"


@pytest.fixture
def edge(cluster: Cluster, ns: str, nats_server: EmbeddedNats) -> str:
    cluster.apply(secret("jwt", ns, secret="s"), gateway("edge", ns, nats_server.url))
    eventually(lambda: cluster.get("configmap", "edge-config", ns))
    return "edge"


def events(cluster: Cluster, ns: str, name: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in cluster.events(ns, name) if e["reason"] == reason]


DRIFTS: dict[str, Any] = {
    "max_msgs": 7,
    "max_bytes": 4096,
    "max_age": 600.0,
    "discard": DiscardPolicy.NEW,
    "duplicate_window": 5.0,
    "allow_direct": False,
    "republish": None,
}


@pytest.mark.parametrize("field", list(DRIFTS))
def test_a_field_changed_behind_the_operators_back_is_changed_back_with_an_event(
    cluster: Cluster, ns: str, edge: str, jetstream: JetStream, field: str
) -> None:
    cluster.apply(channel("agent", ns, edge, "agent", deletionPolicy="Delete"))
    cluster.wait_condition(CH, "agent", ns, "Ready", "True", "StreamReady")
    info = jetstream.info(stream(ns, "agent"))
    assert info is not None
    original = info.config
    jetstream.update(dataclasses.replace(original, **{field: DRIFTS[field]}))

    drifted = eventually(lambda: events(cluster, ns, "agent", "StreamDriftCorrected"))
    assert f"changed back: {field} " in drifted[0]["message"]
    assert drifted[0]["type"] == "Warning"
    restored = jetstream.info(stream(ns, "agent"))
    assert restored is not None
    assert getattr(restored.config, field) == getattr(original, field)
    condition = cluster.wait_condition(CH, "agent", ns, "Ready", "True", "StreamReady")
    assert condition["message"] == f"stream {stream(ns, 'agent')} matches the spec"


def test_a_change_the_server_cannot_undo_is_reported_as_made_on_the_server(
    cluster: Cluster, ns: str, edge: str, jetstream: JetStream
) -> None:
    cluster.apply(channel("agent", ns, edge, "agent"))
    cluster.wait_condition(CH, "agent", ns, "Ready", "True", "StreamReady")
    info = jetstream.info(stream(ns, "agent"))
    assert info is not None
    jetstream.update(dataclasses.replace(info.config, deny_purge=True))
    condition = cluster.wait_condition(CH, "agent", ns, "Ready", "False", "IncompatibleChange")
    assert "deny_purge True -> False cannot change in place" in condition["message"]
    assert "changed on the server, not in the spec" in condition["message"]
    jetstream.delete(stream(ns, "agent"))  # as the message says: re-created as declared
    cluster.wait_condition(CH, "agent", ns, "Ready", "True", "StreamReady")
    recreated = jetstream.info(stream(ns, "agent"))
    assert recreated is not None
    assert not recreated.config.deny_purge


def test_the_channel_records_the_nats_it_reconciled_with(
    cluster: Cluster, ns: str, edge: str, nats_server: EmbeddedNats
) -> None:
    cluster.apply(channel("agent", ns, edge, "agent"))
    cluster.wait_condition(CH, "agent", ns, "Ready", "True", "StreamReady")
    assert cluster.must_get(CH, "agent", ns)["status"]["nats"] == {"url": nats_server.url}


def test_deleting_the_gateway_first_leaves_no_delete_stream_behind(
    cluster: Cluster, ns: str, edge: str, jetstream: JetStream
) -> None:
    cluster.apply(
        channel("agent", ns, edge, "agent", deletionPolicy="Delete"),
        channel("user", ns, edge, "user", deletionPolicy="Delete"),
        channel("conv", ns, edge, "conversation", deletionPolicy="Retain"),
    )
    for name in ("agent", "user", "conv"):
        cluster.wait_condition(CH, name, ns, "Ready", "True", "StreamReady")
    cluster.delete(GW, edge, ns, wait=True)
    for name in ("agent", "user", "conv"):
        cluster.delete(CH, name, ns)
    for name in ("agent", "user", "conv"):
        eventually(lambda name=name: cluster.get(CH, name, ns) is None)
    assert jetstream.info(stream(ns, "agent")) is None
    assert jetstream.info(stream(ns, "user")) is None
    assert jetstream.info(stream(ns, "conversation")) is not None  # Retain keeps it
    assert events(cluster, ns, "agent", "StreamDeleted")


def test_kubectl_delete_of_a_file_listing_the_gateway_first_leaves_no_stream(
    cluster: Cluster, ns: str, nats_server: EmbeddedNats, jetstream: JetStream, tmp_path: Path
) -> None:
    manifests = [
        secret("jwt", ns, secret="s"),
        gateway("edge", ns, nats_server.url),
        channel("agent", ns, "edge", "agent", deletionPolicy="Delete"),
        channel("user", ns, "edge", "user", deletionPolicy="Delete"),
    ]
    path = tmp_path / "all.yaml"
    path.write_text("\n---\n".join(yaml.safe_dump(m) for m in manifests))
    cluster.kubectl("apply", "-f", str(path))
    for name in ("agent", "user"):
        cluster.wait_condition(CH, name, ns, "Ready", "True", "StreamReady")
    cluster.kubectl("delete", "-f", str(path), "--wait=true", "--timeout=60s")
    assert cluster.get(CH, "agent", ns) is None
    assert jetstream.info(stream(ns, "agent")) is None
    assert jetstream.info(stream(ns, "user")) is None


@pytest.fixture
def flaky_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    (tmp_path / "store").mkdir()
    server = EmbeddedNats(store_dir=tmp_path / "store")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_nats_unreachable_at_deletion_holds_the_channel_until_the_stream_is_deleted(
    cluster: Cluster, ns: str, flaky_nats: EmbeddedNats
) -> None:
    cluster.apply(secret("jwt", ns, secret="s"), gateway("edge", ns, flaky_nats.url))
    cluster.apply(channel("agent", ns, "edge", "agent", deletionPolicy="Delete"))
    cluster.wait_condition(CH, "agent", ns, "Ready", "True", "StreamReady")
    flaky_nats.stop()
    cluster.delete(CH, "agent", ns)
    condition = cluster.wait_condition(CH, "agent", ns, "Ready", "False", "StreamNotDeleted")
    assert flaky_nats.url in condition["message"]
    flaky_nats.start()
    eventually(lambda: cluster.get(CH, "agent", ns) is None)
    assert JetStream(flaky_nats.url).info(stream(ns, "agent")) is None


def test_a_stream_goes_even_when_its_nats_credentials_secret_went_first(
    cluster: Cluster, ns: str, nats_server: EmbeddedNats, jetstream: JetStream, tmp_path: Path
) -> None:
    creds = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "nats", "namespace": ns}}
    creds["stringData"] = {"creds": CREDS.decode()}
    nats = {"url": nats_server.url, "credentialsSecret": {"name": "nats", "key": "creds"}}
    manifests = [
        creds,
        secret("jwt", ns, secret="s"),
        gateway("edge", ns, nats_server.url, nats=nats),
        channel("agent", ns, "edge", "agent", deletionPolicy="Delete"),
    ]
    path = tmp_path / "all.yaml"
    path.write_text("\n---\n".join(yaml.safe_dump(m) for m in manifests))
    cluster.kubectl("apply", "-f", str(path))
    cluster.wait_condition(CH, "agent", ns, "Ready", "True", "StreamReady")
    recorded = cluster.must_get(CH, "agent", ns)["status"]["nats"]
    assert recorded["credentialsSecret"] == {"name": "nats", "key": "creds"}
    # Secrets, gateway and Channel in one go, the credentials first.
    cluster.kubectl("delete", "-f", str(path), "--wait=true", "--timeout=60s")
    assert jetstream.info(stream(ns, "agent")) is None


def test_a_stream_that_cannot_be_deleted_holds_the_channel_until_an_annotation_lets_go(
    cluster: Cluster, ns: str, flaky_nats: EmbeddedNats
) -> None:
    cluster.apply(secret("jwt", ns, secret="s"), gateway("edge", ns, flaky_nats.url))
    cluster.apply(channel("agent", ns, "edge", "agent", deletionPolicy="Delete"))
    cluster.wait_condition(CH, "agent", ns, "Ready", "True", "StreamReady")
    # The gateway goes first (the Channel's recorded NATS is used), then its NATS for good.
    cluster.delete(GW, "edge", ns, wait=True)
    flaky_nats.stop()
    cluster.delete(CH, "agent", ns)

    condition = cluster.wait_condition(CH, "agent", ns, "Ready", "False", "StreamNotDeleted")
    assert f"stream {stream(ns, 'agent')} not deleted" in condition["message"]
    assert flaky_nats.url in condition["message"]
    assert ABANDON_STREAM_ANNOTATION in condition["message"]
    warning = eventually(lambda: events(cluster, ns, "agent", "StreamNotDeleted"))
    assert warning[0]["type"] == "Warning"
    assert cluster.get(CH, "agent", ns) is not None  # held by its finalizer

    cluster.kubectl("annotate", CH, "agent", "-n", ns, f"{ABANDON_STREAM_ANNOTATION}=true")
    eventually(lambda: cluster.get(CH, "agent", ns) is None)
    assert events(cluster, ns, "agent", "StreamAbandoned")


def forget_recorded_nats(cluster: Cluster, name: str, ns: str) -> None:
    """The Channel as an operator killed between creating the stream and recording it leaves it."""
    patch = {"status": {"nats": None}}
    cluster.patch(CH, name, ns, patch, "--subresource=status")
    eventually(lambda: "nats" not in cluster.must_get(CH, name, ns)["status"])


def test_the_nats_is_recorded_before_the_stream_is_created(
    cluster: Cluster, ns: str, edge: str, jetstream: JetStream, nats_server: EmbeddedNats
) -> None:
    # A stream already holding the Channel's subjects makes the creation fail: what was
    # recorded by then is what a kill between creating and recording would leave.
    stored, _ = stream_subjects(subject_prefix(ns, edge), "agent")
    jetstream.add(StreamConfig(name=f"{ns}_blocker", subjects=[stored]))
    cluster.apply(channel("agent", ns, edge, "agent", deletionPolicy="Delete"))
    cluster.wait_condition(CH, "agent", ns, "Ready", "False", "StreamRejected")
    assert cluster.must_get(CH, "agent", ns)["status"]["nats"] == {"url": nats_server.url}
    jetstream.delete(f"{ns}_blocker")


def test_a_channel_without_a_record_borrows_its_siblings_to_delete_its_stream(
    cluster: Cluster, ns: str, edge: str, jetstream: JetStream
) -> None:
    cluster.apply(
        channel("agent", ns, edge, "agent", deletionPolicy="Delete"),
        channel("user", ns, edge, "user", deletionPolicy="Delete"),
    )
    for name in ("agent", "user"):
        cluster.wait_condition(CH, name, ns, "Ready", "True", "StreamReady")
    cluster.delete(GW, edge, ns, wait=True)
    forget_recorded_nats(cluster, "agent", ns)
    cluster.delete(CH, "agent", ns)
    eventually(lambda: cluster.get(CH, "agent", ns) is None)
    assert jetstream.info(stream(ns, "agent")) is None


def test_a_channel_without_any_record_of_its_nats_is_held_not_silently_released(
    cluster: Cluster, ns: str, edge: str, jetstream: JetStream
) -> None:
    cluster.apply(channel("agent", ns, edge, "agent", deletionPolicy="Delete"))
    cluster.wait_condition(CH, "agent", ns, "Ready", "True", "StreamReady")
    cluster.delete(GW, edge, ns, wait=True)
    forget_recorded_nats(cluster, "agent", ns)
    cluster.delete(CH, "agent", ns)

    condition = cluster.wait_condition(CH, "agent", ns, "Ready", "False", "StreamNotDeleted")
    assert f"stream {stream(ns, 'agent')} not deleted" in condition["message"]
    assert "recorded its NATS" in condition["message"]
    assert ABANDON_STREAM_ANNOTATION in condition["message"]
    warning = eventually(lambda: events(cluster, ns, "agent", "StreamNotDeleted"))
    assert warning[0]["type"] == "Warning"
    assert cluster.get(CH, "agent", ns) is not None

    cluster.kubectl("annotate", CH, "agent", "-n", ns, f"{ABANDON_STREAM_ANNOTATION}=true")
    eventually(lambda: cluster.get(CH, "agent", ns) is None)
    assert jetstream.info(stream(ns, "agent")) is not None  # left in place, as annotated


def test_a_channel_being_deleted_no_longer_says_its_stream_matches_the_spec(
    cluster: Cluster, ns: str, edge: str, jetstream: JetStream
) -> None:
    held = channel("agent", ns, edge, "agent", deletionPolicy="Delete")
    held["metadata"]["finalizers"] = ["example.com/hold"]  # another controller's, kept
    cluster.apply(held)
    cluster.wait_condition(CH, "agent", ns, "Ready", "True", "StreamReady")
    cluster.delete(CH, "agent", ns)
    condition = cluster.wait_condition(CH, "agent", ns, "Ready", "False", "Deleting")
    assert f"stream {stream(ns, 'agent')} is deleted with it" in condition["message"]
    eventually(lambda: jetstream.info(stream(ns, "agent")) is None)
    cluster.patch(CH, "agent", ns, {"metadata": {"finalizers": None}})
    eventually(lambda: cluster.get(CH, "agent", ns) is None)


def test_a_channel_without_a_record_released_after_its_siblings_is_checked_on_their_nats(
    cluster: Cluster, ns: str, edge: str, jetstream: JetStream
) -> None:
    cluster.apply(
        channel("agent", ns, edge, "agent", deletionPolicy="Delete"),
        channel("user", ns, edge, "user", deletionPolicy="Delete"),
    )
    for name in ("agent", "user"):
        cluster.wait_condition(CH, name, ns, "Ready", "True", "StreamReady")
    cluster.delete(GW, edge, ns, wait=True)
    forget_recorded_nats(cluster, "agent", ns)
    cluster.delete(CH, "user", ns, wait=True)  # the last record goes first
    cluster.delete(CH, "agent", ns)
    eventually(lambda: cluster.get(CH, "agent", ns) is None)
    assert jetstream.info(stream(ns, "agent")) is None
