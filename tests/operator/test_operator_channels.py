"""Channels against a real API server, the running operator and real JetStream."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from neurelay.config import GatewayConfig, NamespaceSettings
from neurelay.embedded import EmbeddedNats
from neurelay.jetstream.streams import desired_stream, stream_drift
from tests.operator.conftest import (
    REPO,
    Cluster,
    JetStream,
    channel,
    eventually,
    gateway,
    secret,
)

CH = "channel"
GW = "realtimegateway"


def prefix(ns: str, name: str = "edge") -> str:
    return f"{ns}_{name}"


def stream(ns: str, namespace: str) -> str:
    return f"{prefix(ns)}_{namespace}"


def served_history(cluster: Cluster, ns: str, channel_ns: str) -> int | None:
    """History the gateway's ConfigMap gives `channel_ns`; None while it does not serve it."""
    settings = served_namespaces(cluster, ns).get(channel_ns)
    return None if settings is None else settings.history_messages


def served_namespaces(
    cluster: Cluster, ns: str, gateway: str = "edge"
) -> dict[str, NamespaceSettings]:
    config_map = cluster.get("configmap", f"{gateway}-config", ns)
    if config_map is None:
        return {}
    config = GatewayConfig.model_validate(yaml.safe_load(config_map["data"]["gateway.yaml"]))
    return config.namespaces


@pytest.fixture
def edge(cluster: Cluster, ns: str, nats_server: EmbeddedNats) -> str:
    cluster.apply(secret("jwt", ns, secret="s"), gateway("edge", ns, nats_server.url))
    eventually(lambda: cluster.get("configmap", "edge-config", ns))
    return "edge"


def test_channel_creates_its_stream_and_joins_the_gateway_config(
    cluster: Cluster, ns: str, edge: str, jetstream: JetStream
) -> None:
    cluster.apply(channel("agent", ns, edge, "agent", history={"messages": 50}))
    cluster.wait_condition(CH, "agent", ns, "Ready", "True", "StreamReady")
    info = jetstream.info(stream(ns, "agent"))
    assert info is not None
    desired = desired_stream(prefix(ns), "agent", NamespaceSettings(history_messages=50))
    assert stream_drift(desired, info.config).in_sync
    eventually(lambda: "agent" in served_namespaces(cluster, ns))
    assert served_namespaces(cluster, ns)["agent"].history_messages == 50
    body = cluster.must_get(CH, "agent", ns)
    assert body["status"]["stream"] == stream(ns, "agent")
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
    jetstream.publish(f"{prefix(ns)}.s.agent.a1", b"hello")
    eventually(lambda: cluster.must_get(CH, "agent", ns)["status"].get("messages") == 1)
    row = cluster.row("rtch", "agent", ns)
    assert row["STREAM"] == stream(ns, "agent")
    assert (row["READY"], row["REASON"]) == ("True", "StreamReady")
    gateway_status = eventually(lambda: cluster.must_get(GW, edge, ns)["status"].get("channels"))
    assert gateway_status == ["agent"]


def test_history_change_updates_the_stream_in_place(
    cluster: Cluster, ns: str, edge: str, jetstream: JetStream
) -> None:
    cluster.apply(channel("conv", ns, edge, "conversation"))
    cluster.wait_condition(CH, "conv", ns, "Ready", "True")
    jetstream.publish(f"{prefix(ns)}.s.conversation.c1", b"kept")
    cluster.patch(CH, "conv", ns, {"spec": {"history": {"messages": 7, "maxAgeSeconds": 600}}})

    def updated() -> bool:
        info = jetstream.info(stream(ns, "conversation"))
        return info is not None and info.config.max_msgs_per_subject == 7

    eventually(updated)
    info = jetstream.info(stream(ns, "conversation"))
    assert info is not None
    assert info.state.messages == 1  # updated, not re-created
    assert info.config.max_age == 600
    # The gateway's ConfigMap follows the Channel (a coalesced gateway reconcile).
    eventually(lambda: served_history(cluster, ns, "conversation") == 7)
    assert any(e["reason"] == "StreamUpdated" for e in cluster.events(ns, "conv"))


@pytest.mark.parametrize(("policy", "kept"), [("Delete", False), ("Retain", True)])
def test_deletion_policy_decides_the_streams_fate(
    cluster: Cluster, ns: str, edge: str, jetstream: JetStream, policy: str, kept: bool
) -> None:
    cluster.apply(channel("user", ns, edge, "user", deletionPolicy=policy))
    cluster.wait_condition(CH, "user", ns, "Ready", "True")
    eventually(lambda: "user" in served_namespaces(cluster, ns))
    cluster.delete(CH, "user", ns)
    eventually(lambda: cluster.get(CH, "user", ns) is None)
    assert (jetstream.info(stream(ns, "user")) is not None) is kept
    eventually(lambda: "user" not in served_namespaces(cluster, ns))


def test_stream_deleted_behind_the_operators_back_comes_back(
    cluster: Cluster, ns: str, edge: str, jetstream: JetStream
) -> None:
    cluster.apply(channel("agent", ns, edge, "agent"))
    cluster.wait_condition(CH, "agent", ns, "Ready", "True")
    jetstream.delete(stream(ns, "agent"))
    eventually(lambda: jetstream.info(stream(ns, "agent")) is not None)
    eventually(lambda: any(e["reason"] == "StreamRecreated" for e in cluster.events(ns, "agent")))


def test_stream_changed_behind_the_operators_back_is_restored(
    cluster: Cluster, ns: str, edge: str, jetstream: JetStream
) -> None:
    cluster.apply(channel("agent", ns, edge, "agent"))
    cluster.wait_condition(CH, "agent", ns, "Ready", "True")
    info = jetstream.info(stream(ns, "agent"))
    assert info is not None
    jetstream.update(dataclasses.replace(info.config, max_msgs_per_subject=3))

    def restored() -> bool:
        current = jetstream.info(stream(ns, "agent"))
        return current is not None and current.config.max_msgs_per_subject == 100

    eventually(restored)
    eventually(
        lambda: any(e["reason"] == "StreamDriftCorrected" for e in cluster.events(ns, "agent"))
    )


def test_existing_compatible_stream_is_adopted(
    cluster: Cluster, ns: str, edge: str, jetstream: JetStream
) -> None:
    desired = desired_stream(prefix(ns), "agent", NamespaceSettings(history_messages=100))
    jetstream.add(desired)
    jetstream.publish(f"{prefix(ns)}.s.agent.a1", b"old")
    cluster.apply(channel("agent", ns, edge, "agent"))
    cluster.wait_condition(CH, "agent", ns, "Ready", "True")
    eventually(lambda: any(e["reason"] == "StreamAdopted" for e in cluster.events(ns, "agent")))
    info = jetstream.info(stream(ns, "agent"))
    assert info is not None
    assert info.state.messages == 1


def test_storage_change_is_reported_not_retried(
    cluster: Cluster, ns: str, edge: str, jetstream: JetStream
) -> None:
    cluster.apply(channel("agent", ns, edge, "agent"))
    cluster.wait_condition(CH, "agent", ns, "Ready", "True")
    cluster.patch(CH, "agent", ns, {"spec": {"history": {"storage": "memory"}}})
    condition = cluster.wait_condition(CH, "agent", ns, "Ready", "False", "IncompatibleChange")
    assert "storage" in condition["message"]
    info = jetstream.info(stream(ns, "agent"))
    assert info is not None
    assert str(getattr(info.config.storage, "value", info.config.storage)) == "file"
    # Reported once per spec change (an Event with count 1), not retried in a loop: the drift
    # timer runs many times meanwhile without reporting it again.
    cluster.patch(CH, "agent", ns, {"spec": {"history": {"messages": 5}}})
    eventually(
        lambda: (
            cluster.must_get(CH, "agent", ns)["status"]["observedGeneration"]
            == cluster.must_get(CH, "agent", ns)["metadata"]["generation"]
        )
    )
    warnings = [e for e in cluster.events(ns, "agent") if e["reason"] == "IncompatibleChange"]
    assert len(warnings) == 2
    assert all(w.get("count", 1) == 1 for w in warnings)


def test_zero_history_means_no_stream(
    cluster: Cluster, ns: str, edge: str, jetstream: JetStream
) -> None:
    cluster.apply(channel("metrics", ns, edge, "metrics", history={"messages": 0}))
    cluster.wait_condition(CH, "metrics", ns, "Ready", "True", "NoHistory")
    assert jetstream.info(stream(ns, "metrics")) is None
    eventually(lambda: served_namespaces(cluster, ns).get("metrics"))
    assert served_namespaces(cluster, ns)["metrics"].history_messages == 0


def test_younger_channel_for_the_same_namespace_is_a_conflict(
    cluster: Cluster, ns: str, edge: str, jetstream: JetStream
) -> None:
    cluster.apply(channel("a-first", ns, edge, "agent", history={"messages": 10}))
    cluster.wait_condition(CH, "a-first", ns, "Ready", "True")
    cluster.apply(channel("b-second", ns, edge, "agent", history={"messages": 99}))
    condition = cluster.wait_condition(CH, "b-second", ns, "Ready", "False", "Conflict")
    assert "a-first" in condition["message"]
    info = jetstream.info(stream(ns, "agent"))
    assert info is not None
    assert info.config.max_msgs_per_subject == 10
    eventually(lambda: served_history(cluster, ns, "agent") == 10)
    # When the older one goes (retaining the stream), the younger takes over.
    cluster.delete(CH, "a-first", ns)
    cluster.wait_condition(CH, "b-second", ns, "Ready", "True", timeout=30)
    eventually(lambda: served_history(cluster, ns, "agent") == 99)


def test_missing_gateway_is_reported_until_it_exists(
    cluster: Cluster, ns: str, nats_server: EmbeddedNats, jetstream: JetStream
) -> None:
    cluster.apply(channel("agent", ns, "edge", "agent"))
    cluster.wait_condition(CH, "agent", ns, "Ready", "False", "GatewayNotFound")
    eventually(lambda: any(e["reason"] == "GatewayNotFound" for e in cluster.events(ns, "agent")))
    cluster.apply(secret("jwt", ns, secret="s"), gateway("edge", ns, nats_server.url))
    cluster.wait_condition(CH, "agent", ns, "Ready", "True", timeout=30)
    assert jetstream.info(stream(ns, "agent")) is not None


@pytest.fixture
def flaky_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    (tmp_path / "store").mkdir()
    server = EmbeddedNats(store_dir=tmp_path / "store")
    try:
        yield server
    finally:
        server.stop()


def test_nats_down_then_up(cluster: Cluster, ns: str, flaky_nats: EmbeddedNats) -> None:
    cluster.apply(secret("jwt", ns, secret="s"), gateway("edge", ns, flaky_nats.url))
    cluster.apply(channel("agent", ns, "edge", "agent"))
    condition = cluster.wait_condition(CH, "agent", ns, "Ready", "False", "NatsUnavailable")
    assert flaky_nats.url in condition["message"]
    flaky_nats.start()
    cluster.wait_condition(CH, "agent", ns, "Ready", "True", timeout=30)
    assert JetStream(flaky_nats.url).info(stream(ns, "agent")) is not None
    flaky_nats.stop()
    cluster.wait_condition(CH, "agent", ns, "Ready", "False", "NatsUnavailable", timeout=30)
    flaky_nats.start()
    cluster.wait_condition(CH, "agent", ns, "Ready", "True", timeout=30)


def test_paused_channel_leaves_its_stream_alone(
    cluster: Cluster, ns: str, edge: str, jetstream: JetStream
) -> None:
    cluster.apply(channel("agent", ns, edge, "agent"))
    cluster.wait_condition(CH, "agent", ns, "Ready", "True")
    cluster.kubectl("annotate", CH, "agent", "-n", ns, "realtime.neurectomy.io/paused=true")
    cluster.patch(CH, "agent", ns, {"spec": {"history": {"messages": 5}}})
    jetstream.delete(stream(ns, "agent"))
    # Barrier: a later Channel is handled, the paused one's stream is still gone.
    cluster.apply(channel("user", ns, edge, "user"))
    cluster.wait_condition(CH, "user", ns, "Ready", "True")
    assert jetstream.info(stream(ns, "agent")) is None
    cluster.kubectl("annotate", CH, "agent", "-n", ns, "realtime.neurectomy.io/paused-")

    def back() -> bool:
        info = jetstream.info(stream(ns, "agent"))
        return info is not None and info.config.max_msgs_per_subject == 5

    eventually(back)


def test_examples_apply_and_become_ready(
    cluster: Cluster, ns: str, nats_server: EmbeddedNats, jetstream: JetStream
) -> None:
    documents = [
        d
        for path in ("realtimegateway.yaml", "channels.yaml")
        for d in yaml.safe_load_all((REPO / "examples" / path).read_text())
    ]
    for document in documents:
        document["metadata"]["namespace"] = ns
        if document["kind"] == "RealtimeGateway":
            document["spec"]["nats"]["url"] = nats_server.url
    cluster.apply(secret("neurelay-jwt", ns, secret="s"), *documents)
    channels = [d["metadata"]["name"] for d in documents if d["kind"] == "Channel"]
    assert len(channels) == 5
    for name in channels:
        cluster.wait_condition(CH, name, ns, "Ready", "True")
    eventually(lambda: len(served_namespaces(cluster, ns, "neurelay")) == 5)
    served = served_namespaces(cluster, ns, "neurelay")
    assert set(served) == {"agent", "user", "conversation", "system", "metrics"}
    assert served["metrics"].history_messages == 0
    assert jetstream.info(f"{ns}_neurelay_system") is not None
    assert jetstream.info(f"{ns}_neurelay_metrics") is None
    assert cluster.get("horizontalpodautoscaler", "neurelay", ns) is not None
