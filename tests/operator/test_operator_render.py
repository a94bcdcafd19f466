"""Rendering a RealtimeGateway (and its Channels) into child manifests (no cluster needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from neurelay.config import GatewayConfig, load_config
from neurelay.operator import naming, render
from neurelay.operator.models import ChannelSpec, RealtimeGatewaySpec

REF = naming.GatewayRef("prod", "edge", "uid-1")


def spec(**overrides: Any) -> RealtimeGatewaySpec:
    body = {
        "nats": {"url": "nats://nats:4222"},
        "auth": {"secretRef": {"name": "jwt", "key": "secret"}},
        **overrides,
    }
    return RealtimeGatewaySpec.model_validate(body)


def channels() -> list[ChannelSpec]:
    return [
        ChannelSpec.model_validate({"gateway": "edge", "namespace": "agent"}),
        ChannelSpec.model_validate(
            {"gateway": "edge", "namespace": "metrics", "history": {"messages": 0}}
        ),
    ]


def config_of(children: render.Children, tmp_path: Path) -> GatewayConfig:
    path = tmp_path / "gateway.yaml"
    path.write_text(children.config_map["data"]["gateway.yaml"])
    return load_config(path, environ={})


def template_hash(children: render.Children) -> str:
    annotations = children.deployment["spec"]["template"]["metadata"]["annotations"]
    value: str = annotations[naming.RESTART_HASH_ANNOTATION]
    return value


def test_config_map_holds_a_gateway_config_the_gateway_loads(tmp_path: Path) -> None:
    children = render.render_children(REF, spec(), channels(), {"auth": "d1"})
    config = config_of(children, tmp_path)
    assert config.nats.manage_streams is False
    assert config.nats.subject_prefix == "prod_edge"
    assert config.nats.servers == ["nats://nats:4222"]
    assert config.auth.secret_file == f"{naming.AUTH_DIR}/secret"
    assert set(config.namespaces) == {"agent", "metrics"}
    assert config.namespaces["metrics"].history_messages == 0
    assert config.server.port == naming.CONTAINER_PORT


def test_subject_prefix_is_sanitised_and_bounded() -> None:
    assert naming.subject_prefix("team.a", "edge") == "team_a_edge"
    long = naming.subject_prefix("n" * 63, "g" * 200)
    assert len(long) == 64
    assert long != naming.subject_prefix("n" * 63, "g" * 199)


def test_restart_hash_ignores_live_settings_but_not_restart_ones() -> None:
    base = template_hash(render.render_children(REF, spec(), channels(), {"auth": "d1"}))
    live_changes = [
        render.render_children(
            REF, spec(limits={"connectionsPerUser": 9}), channels(), {"auth": "d1"}
        ),
        render.render_children(REF, spec(allowedOrigins=["https://x"]), [], {"auth": "d1"}),
    ]
    assert all(template_hash(c) == base for c in live_changes)
    restart_changes = [
        render.render_children(REF, spec(image="neurelay:2"), channels(), {"auth": "d1"}),
        render.render_children(REF, spec(), channels(), {"auth": "d2"}),
        render.render_children(
            REF, spec(nats={"url": "nats://other:4222"}), channels(), {"auth": "d1"}
        ),
    ]
    assert all(template_hash(c) != base for c in restart_changes)


def test_deployment_runs_the_gateway_hardened_with_probes() -> None:
    deployment = render.render_children(REF, spec(drainPeriodSeconds=25), [], {}).deployment
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert [*container["command"], *container["args"]] == [
        "neurelay",
        "gateway",
        "--config",
        "/etc/neurelay/gateway.yaml",
    ]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["terminationGracePeriodSeconds"] > 25
    assert deployment["spec"]["replicas"] == 2
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/etc/neurelay", naming.AUTH_DIR, "/tmp"} <= mounts
    owner = deployment["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("RealtimeGateway", "uid-1", True)


def test_autoscaling_adds_an_hpa_and_a_new_deployment_starts_at_min_replicas() -> None:
    children = render.render_children(
        REF, spec(autoscaling={"enabled": True, "minReplicas": 3, "maxReplicas": 7}), [], {}
    )
    assert children.deployment["spec"]["replicas"] == 3
    assert children.autoscaler is not None
    assert children.autoscaler["spec"]["minReplicas"] == 3
    assert children.autoscaler["spec"]["maxReplicas"] == 7
    plain = render.render_children(REF, spec(), [], {})
    assert plain.autoscaler is None


def test_ingress_is_websocket_friendly_and_user_annotations_win() -> None:
    children = render.render_children(
        REF,
        spec(
            ingress={
                "host": "rt.example.com",
                "className": "nginx",
                "tlsSecretName": "rt-tls",
                "annotations": {"nginx.ingress.kubernetes.io/proxy-read-timeout": "7200"},
            }
        ),
        [],
        {},
    )
    ingress = children.ingress
    assert ingress is not None
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "7200"
    assert annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "3600"
    assert annotations["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"][0]["secretName"] == "rt-tls"
    assert (
        naming.endpoint(REF, spec(ingress={"host": "rt.example.com"})) == "ws://rt.example.com/ws"
    )


def test_optional_children_absent_when_not_asked_for() -> None:
    children = render.render_children(REF, spec(podDisruptionBudget={"enabled": False}), [], {})
    assert children.ingress is None
    assert children.disruption_budget is None
    assert [m["kind"] for m in children.present()] == ["ConfigMap", "Service", "Deployment"]


def test_public_key_and_nats_credentials_are_mounted_files(tmp_path: Path) -> None:
    children = render.render_children(
        REF,
        spec(
            auth={"algorithm": "RS256", "publicKeyRef": {"name": "jwt-pub", "key": "pem"}},
            nats={"url": "nats://n:4222", "credentialsSecret": {"name": "nc", "key": "c"}},
        ),
        [],
        {},
    )
    config = config_of(children, tmp_path)
    assert config.auth.public_key_file == f"{naming.AUTH_DIR}/public.pem"
    assert config.nats.credentials_file == f"{naming.NATS_DIR}/nats.creds"
    volumes = {v["name"]: v for v in children.deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["auth-secret"]["secret"]["items"] == [{"key": "pem", "path": "public.pem"}]
    assert volumes["nats-secret"]["secret"]["secretName"] == "nc"


def test_manifests_serialise_to_yaml() -> None:
    children = render.render_children(REF, spec(ingress={"host": "a.b"}), channels(), {})
    for manifest in children.present():
        assert yaml.safe_load(yaml.safe_dump(manifest)) == manifest


def test_gateway_pods_pause_before_draining_and_get_time_for_both() -> None:
    spec = RealtimeGatewaySpec.model_validate(
        {
            "nats": {"url": "nats://nats:4222"},
            "auth": {"secretRef": {"name": "s", "key": "k"}},
            "preStopSeconds": 7,
            "drainPeriodSeconds": 20,
        }
    )
    children = render.render_children(REF, spec, [], {})
    pod = children.deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "7"]
    assert pod["terminationGracePeriodSeconds"] >= 7 + 20


def test_channel_presence_and_join_leave_reach_the_config_map_and_apply_live(
    tmp_path: Path,
) -> None:
    quiet = channels()
    social = [
        ChannelSpec.model_validate(
            {"gateway": "edge", "namespace": "agent", "presence": True, "joinLeave": True}
        ),
        quiet[1],
    ]

    before = render.render_children(REF, spec(), quiet, {"auth": "d1"})
    after = render.render_children(REF, spec(), social, {"auth": "d1"})
    config = config_of(after, tmp_path)

    assert (config.namespaces["agent"].presence, config.namespaces["agent"].join_leave) == (
        True,
        True,
    )
    assert not config.namespaces["metrics"].presence
    assert not config_of(before, tmp_path).namespaces["agent"].join_leave
    assert template_hash(after) == template_hash(before)


def test_gateway_presence_settings_reach_the_config_map_and_apply_live(tmp_path: Path) -> None:
    tuned = {"ttlSeconds": 4.5, "maxClients": 250, "requestTimeoutSeconds": 1.5}

    before = render.render_children(REF, spec(), channels(), {"auth": "d1"})
    after = render.render_children(REF, spec(presence=tuned), channels(), {"auth": "d1"})
    defaults = config_of(before, tmp_path).presence
    presence = config_of(after, tmp_path).presence

    assert (presence.ttl_seconds, presence.max_clients, presence.request_timeout_seconds) == (
        4.5,
        250,
        1.5,
    )
    assert defaults == GatewayConfig().presence
    assert template_hash(after) == template_hash(before)


def test_with_autoscaling_the_live_replica_count_is_kept_within_the_autoscalers_bounds() -> None:
    scaled = spec(autoscaling={"enabled": True, "minReplicas": 4, "maxReplicas": 8})

    def replicas(live: int | None) -> int:
        deployment = None if live is None else {"spec": {"replicas": live}}
        children = render.render_children(REF, scaled, [], {}, deployment)
        value: int = children.deployment["spec"]["replicas"]
        return value

    assert replicas(None) == 4
    assert replicas(1) == 4
    assert replicas(6) == 6
    assert replicas(20) == 8
