"""RealtimeGateway against a real API server and the running operator."""

from __future__ import annotations

import yaml

from neurelay.config import GatewayConfig
from neurelay.embedded import EmbeddedNats
from neurelay.operator.naming import RESTART_HASH_ANNOTATION
from tests.operator.conftest import Cluster, eventually, gateway, secret

GW = "realtimegateway"


def restart_hash(cluster: Cluster, ns: str, name: str = "edge") -> str:
    deployment = cluster.must_get("deployment", name, ns)
    value: str = deployment["spec"]["template"]["metadata"]["annotations"][RESTART_HASH_ANNOTATION]
    return value


def gateway_config(cluster: Cluster, ns: str, name: str = "edge") -> GatewayConfig:
    config_map = cluster.must_get("configmap", f"{name}-config", ns)
    return GatewayConfig.model_validate(yaml.safe_load(config_map["data"]["gateway.yaml"]))


def make_ready(cluster: Cluster, ns: str, replicas: int, name: str = "edge") -> None:
    """Play the kubelet and deployment controller: report the pods as ready."""
    generation = cluster.must_get("deployment", name, ns)["metadata"]["generation"]
    status = {
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
    }
    cluster.patch("deployment", name, ns, {"status": status}, "--subresource=status")


def test_children_appear_with_owner_references_and_right_fields(
    cluster: Cluster, ns: str, nats_server: EmbeddedNats
) -> None:
    cluster.apply(
        secret("jwt", ns, secret="s3cret"),
        gateway(
            "edge",
            ns,
            nats_server.url,
            ingress={"host": "rt.example.com", "tlsSecretName": "rt-tls"},
            limits={"connectionsPerUser": 3},
        ),
    )
    uid = cluster.must_get(GW, "edge", ns)["metadata"]["uid"]
    eventually(lambda: cluster.get("poddisruptionbudget", "edge", ns))
    for kind, name in [
        ("configmap", "edge-config"),
        ("deployment", "edge"),
        ("service", "edge"),
        ("ingress", "edge"),
        ("poddisruptionbudget", "edge"),
    ]:
        owners = cluster.must_get(kind, name, ns)["metadata"]["ownerReferences"]
        assert [(o["kind"], o["uid"], o["controller"]) for o in owners] == [
            ("RealtimeGateway", uid, True)
        ], kind
    assert cluster.get("horizontalpodautoscaler", "edge", ns) is None
    config = gateway_config(cluster, ns)
    assert config.nats.manage_streams is False
    assert config.nats.subject_prefix == f"{ns}_edge".replace("-", "-")
    assert config.limits.connections_per_user == 3
    pod = cluster.must_get("deployment", "edge", ns)["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"] == ["gateway", "--config", "/etc/neurelay/gateway.yaml"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    ingress = cluster.must_get("ingress", "edge", ns)
    assert ingress["spec"]["rules"][0]["host"] == "rt.example.com"
    status = eventually(
        lambda: (cluster.get(GW, "edge", ns) or {}).get("status", {}).get("endpoint")
    )
    assert status == "wss://rt.example.com/ws"
    printed = cluster.kubectl("get", "rtgw", "-n", ns)
    assert "wss://rt.example.com/ws" in printed
    assert "REPLICAS" in printed


def test_invalid_resources_are_refused_with_the_cel_messages(cluster: Cluster, ns: str) -> None:
    result = cluster.try_apply(
        gateway(
            "bad",
            ns,
            "nats://n:4222",
            auth={"algorithm": "RS256", "secretRef": {"name": "jwt", "key": "secret"}},
            autoscaling={"enabled": True, "minReplicas": 5, "maxReplicas": 2},
            limits={"maxMessageBytes": 1048576, "sendQueueBytes": 65536},
        )
    )
    assert result.returncode != 0
    assert "set auth.publicKeyRef and not auth.secretRef" in result.stderr
    assert "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" in result.stderr
    assert "limits.sendQueueBytes must hold at least one message" in result.stderr
    result = cluster.try_apply(gateway("bad", ns, "nats://n:4222", replicas=-1))
    assert result.returncode != 0
    assert "spec.replicas" in result.stderr


def test_resource_quantities_and_too_short_timeouts_are_refused_at_admission(
    cluster: Cluster, ns: str
) -> None:
    result = cluster.try_apply(
        gateway("bad", ns, "nats://n:4222", resources={"limits": {"cpu": "banana"}})
    )
    assert result.returncode != 0
    assert "spec.resources.limits.cpu" in result.stderr
    result = cluster.try_apply(
        gateway("bad", ns, "nats://n:4222", limits={"heartbeatSeconds": 1e-7})
    )
    assert result.returncode != 0
    assert "spec.limits.heartbeatSeconds" in result.stderr
    quantities = {"requests": {"cpu": "250m", "memory": 134217728}, "limits": {"cpu": 2}}
    assert (
        cluster.try_apply(gateway("good", ns, "nats://n:4222", resources=quantities)).returncode
        == 0
    )


def test_scale_subresource_scales_the_deployment(
    cluster: Cluster, ns: str, nats_server: EmbeddedNats
) -> None:
    cluster.apply(secret("jwt", ns, secret="s"), gateway("edge", ns, nats_server.url))
    eventually(lambda: cluster.get("deployment", "edge", ns))
    cluster.kubectl("scale", "rtgw/edge", "-n", ns, "--replicas=3")
    eventually(lambda: cluster.must_get("deployment", "edge", ns)["spec"]["replicas"] == 3)


def test_limit_change_rewrites_config_map_without_restart_hash_change(
    cluster: Cluster, ns: str, nats_server: EmbeddedNats
) -> None:
    cluster.apply(secret("jwt", ns, secret="s"), gateway("edge", ns, nats_server.url))
    eventually(lambda: cluster.get("deployment", "edge", ns))
    before = restart_hash(cluster, ns)
    cluster.patch(GW, "edge", ns, {"spec": {"limits": {"connectionsPerUser": 42}}})
    eventually(lambda: gateway_config(cluster, ns).limits.connections_per_user == 42)
    assert restart_hash(cluster, ns) == before
    cluster.patch(GW, "edge", ns, {"spec": {"image": "neurelay:next"}})
    eventually(lambda: restart_hash(cluster, ns) != before)


def test_secret_rotation_on_reconcile_changes_restart_hash(
    cluster: Cluster, ns: str, nats_server: EmbeddedNats
) -> None:
    cluster.apply(secret("jwt", ns, secret="one"), gateway("edge", ns, nats_server.url))
    eventually(lambda: cluster.get("deployment", "edge", ns))
    before = restart_hash(cluster, ns)
    cluster.apply(secret("jwt", ns, secret="two"))
    cluster.patch(GW, "edge", ns, {"spec": {"logLevel": "DEBUG"}})
    eventually(lambda: restart_hash(cluster, ns) != before)


def test_autoscaling_creates_hpa_and_leaves_replicas_to_it(
    cluster: Cluster, ns: str, nats_server: EmbeddedNats
) -> None:
    cluster.apply(secret("jwt", ns, secret="s"), gateway("edge", ns, nats_server.url))
    eventually(lambda: cluster.get("deployment", "edge", ns))
    cluster.patch(GW, "edge", ns, {"spec": {"autoscaling": {"enabled": True, "minReplicas": 2}}})
    hpa = eventually(lambda: cluster.get("horizontalpodautoscaler", "edge", ns))
    assert hpa["spec"]["scaleTargetRef"]["name"] == "edge"
    # The autoscaler's choice survives the next reconcile.
    cluster.kubectl("scale", "deployment/edge", "-n", ns, "--replicas=5")
    cluster.patch(GW, "edge", ns, {"spec": {"limits": {"connectionsPerUser": 7}}})
    eventually(lambda: gateway_config(cluster, ns).limits.connections_per_user == 7)
    assert cluster.must_get("deployment", "edge", ns)["spec"]["replicas"] == 5
    cluster.patch(GW, "edge", ns, {"spec": {"autoscaling": {"enabled": False}}})
    eventually(lambda: cluster.get("horizontalpodautoscaler", "edge", ns) is None)


def test_status_follows_deployment_readiness_and_generation(
    cluster: Cluster, ns: str, nats_server: EmbeddedNats
) -> None:
    cluster.apply(secret("jwt", ns, secret="s"), gateway("edge", ns, nats_server.url))
    cluster.wait_condition(GW, "edge", ns, "Ready", "False", "ReplicasNotReady")
    cluster.wait_condition(GW, "edge", ns, "Progressing", "True")
    make_ready(cluster, ns, 2)
    cluster.wait_condition(GW, "edge", ns, "Ready", "True", "ReplicasReady")
    cluster.wait_condition(GW, "edge", ns, "Progressing", "False", "RolloutComplete")
    body = cluster.must_get(GW, "edge", ns)
    assert body["status"]["readyReplicas"] == 2
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
    cluster.patch(GW, "edge", ns, {"spec": {"replicas": 3}})
    eventually(
        lambda: (
            cluster.must_get(GW, "edge", ns)["status"].get("observedGeneration")
            == cluster.must_get(GW, "edge", ns)["metadata"]["generation"]
        )
    )
    cluster.wait_condition(GW, "edge", ns, "Ready", "False", "ReplicasNotReady")
    assert "READY" in cluster.kubectl("get", "rtgw", "-n", ns)


def test_kubectl_get_shows_replicas_in_effect_and_the_ready_reason(
    cluster: Cluster, ns: str, nats_server: EmbeddedNats
) -> None:
    def row() -> dict[str, str]:
        return cluster.row("rtgw", "edge", ns)

    cluster.apply(gateway("edge", ns, nats_server.url, replicas=2))
    cluster.wait_condition(GW, "edge", ns, "Ready", "False", "SecretNotFound")
    assert eventually(lambda: row()["REASON"] == "SecretNotFound")
    assert row()["READY"] == "False"
    cluster.apply(secret("jwt", ns, secret="s"))
    eventually(lambda: row()["REASON"] == "ReplicasNotReady")
    make_ready(cluster, ns, 2)
    expected = {"REPLICAS": "2", "AVAILABLE": "2", "READY": "True", "REASON": "ReplicasReady"}
    eventually(lambda: {column: row()[column] for column in expected} == expected)
    cluster.patch(GW, "edge", ns, {"spec": {"autoscaling": {"enabled": True, "minReplicas": 2}}})
    eventually(lambda: cluster.get("horizontalpodautoscaler", "edge", ns))
    # The autoscaler scales the Deployment; spec.replicas (2) no longer counts.
    cluster.kubectl("scale", "deployment/edge", "-n", ns, "--replicas=4")
    eventually(lambda: row()["REPLICAS"] == "4")


def test_missing_secret_is_a_condition_and_an_event_then_recovers(
    cluster: Cluster, ns: str, nats_server: EmbeddedNats
) -> None:
    cluster.apply(gateway("edge", ns, nats_server.url))
    condition = cluster.wait_condition(GW, "edge", ns, "Degraded", "True", "SecretNotFound")
    assert "jwt" in condition["message"]
    eventually(lambda: any(e["reason"] == "SecretNotFound" for e in cluster.events(ns, "edge")))
    assert cluster.get("deployment", "edge", ns) is None
    cluster.apply(secret("jwt", ns, secret="s"))
    cluster.wait_condition(GW, "edge", ns, "Degraded", "False", timeout=30)
    assert cluster.get("deployment", "edge", ns) is not None


def test_paused_gateway_is_left_alone_until_resumed(
    cluster: Cluster, ns: str, nats_server: EmbeddedNats
) -> None:
    cluster.apply(secret("jwt", ns, secret="s"), gateway("edge", ns, nats_server.url))
    eventually(lambda: cluster.get("configmap", "edge-config", ns))
    cluster.kubectl("annotate", GW, "edge", "-n", ns, "realtime.neurectomy.io/paused=true")
    cluster.patch(GW, "edge", ns, {"spec": {"limits": {"connectionsPerUser": 9}}})
    cluster.delete("configmap", "edge-config", ns)
    # A barrier: the operator handles a gateway changed after the paused one ...
    cluster.apply(gateway("other", ns, nats_server.url))
    eventually(lambda: cluster.get("configmap", "other-config", ns))
    # ... and still has not touched the paused one.
    assert cluster.get("configmap", "edge-config", ns) is None
    cluster.kubectl("annotate", GW, "edge", "-n", ns, "realtime.neurectomy.io/paused-")
    eventually(lambda: gateway_config(cluster, ns).limits.connections_per_user == 9)


def test_kubectl_explain_shows_the_field_descriptions(cluster: Cluster) -> None:
    def explained() -> str:
        result = cluster.cp.kubectl("explain", "rtgw.spec.limits.connectionsPerUser", check=False)
        return result.stdout if result.returncode == 0 else ""

    text = eventually(explained)
    assert "Open connections one user may hold across all replicas." in text
    limit = cluster.kubectl("explain", "rtgw.spec.limits.maxMessageBytes")
    assert "Default: 1048576." in limit
    assert "Minimum: 256. Maximum: 67108864." in limit
    channel_text = cluster.kubectl("explain", "rtch.spec.deletionPolicy")
    assert "Delete removes it with its messages" in channel_text
    presence = " ".join(cluster.kubectl("explain", "rtgw.spec.presence.ttlSeconds").split())
    assert "A replica that has died is taken for dead" in presence
    assert "Default: 30. Minimum: 0.5. Maximum: 300." in presence


def test_turning_autoscaling_on_never_drops_the_deployment_below_min_replicas(
    cluster: Cluster, ns: str, nats_server: EmbeddedNats
) -> None:
    cluster.apply(secret("jwt", ns, secret="s"), gateway("edge", ns, nats_server.url, replicas=4))
    eventually(
        lambda: (cluster.get("deployment", "edge", ns) or {}).get("spec", {}).get("replicas") == 4
    )
    autoscaling = {"enabled": True, "minReplicas": 4, "maxReplicas": 8}
    cluster.patch(GW, "edge", ns, {"spec": {"autoscaling": autoscaling}})
    eventually(lambda: cluster.get("horizontalpodautoscaler", "edge", ns))
    generation = cluster.must_get(GW, "edge", ns)["metadata"]["generation"]
    eventually(
        lambda: cluster.must_get(GW, "edge", ns)["status"].get("observedGeneration") == generation
    )
    assert cluster.must_get("deployment", "edge", ns)["spec"]["replicas"] == 4

    uid = cluster.must_get("deployment", "edge", ns)["metadata"]["uid"]
    cluster.delete("deployment", "edge", ns, wait=True)
    recreated = eventually(
        lambda: (d := cluster.get("deployment", "edge", ns)) and d["metadata"]["uid"] != uid and d
    )
    assert recreated["spec"]["replicas"] == 4  # a new Deployment starts at minReplicas
