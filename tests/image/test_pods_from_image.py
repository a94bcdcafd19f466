"""The operator and the gateway run from the image exactly as their Deployments say.

The chart is installed on the local control plane and its operator Deployment is
started from the image (tests/image/pods.py plays the kubelet) with a token of the
chart's ServiceAccount, logging in the in-cluster way. It reconciles
examples/realtimegateway.yaml and examples/channels.yaml (NATS pointed at the test's
server). The gateway then starts from the image as the Deployment the operator wrote
says: command, args, environment, user, the ConfigMap and the Secret at their mount
paths, a read-only root. A client talks through it, the declared probes answer, and a
pod deletion (preStop, SIGTERM) drains it within the grace period. Everything is read
from the objects in the API server, so a change to the renderer or the chart is tested
through the image.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import nats
import pytest
import yaml

from neurelay.auth import mint_token
from neurelay.client import Client
from neurelay.embedded import EmbeddedNats
from neurelay.protocol.channels import stream_name
from neurelay.protocol.codes import CloseCode
from tests.image.pods import Forward, Image, Pod, ServiceAccount, secret_data
from tests.support.control_plane import ControlPlane, ensure_built

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
RELEASE = "rt"
RELEASE_NS = "neurelay-system"
APP_NS = "neurelay-apps"
T = TypeVar("T")


def eventually(check: Callable[[], T | None], timeout: float = 90.0, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {what}")
        time.sleep(0.25)


def get(cp: ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    result = cp.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


@pytest.fixture(scope="module")
def control_plane() -> Iterator[ControlPlane]:
    with ControlPlane(ensure_built()) as cp:
        yield cp


@pytest.fixture(scope="module")
def nats_server() -> Iterator[EmbeddedNats]:
    with EmbeddedNats() as server:
        yield server


@pytest.fixture(scope="module")
def operator_pod(image: Image, control_plane: ControlPlane, host_ports: None) -> Iterator[Pod]:
    cp = control_plane
    cp.kubectl("create", "namespace", RELEASE_NS)
    cp.helm(
        "install", RELEASE, str(REPO / "charts/neurelay"), "-n", RELEASE_NS,
        "--set", "gateway.enabled=false",
    )  # fmt: skip
    deployment = get(cp, "deployment", f"{RELEASE}-neurelay-operator", RELEASE_NS)
    assert deployment is not None
    spec = deployment["spec"]["template"]["spec"]
    account = spec["serviceAccountName"]
    token = cp.kubectl("create", "token", account, "-n", RELEASE_NS, "--duration=1h").stdout
    api = urlsplit(cp.server_url)
    # The `kubernetes` Service of the default namespace: port 443, reached by name.
    service = Forward(443, (api.hostname or "", api.port or 443))
    pod = Pod.start(
        image,
        spec,
        "operator",
        service_account=ServiceAccount(
            token.strip(), (cp.workdir / "pki/ca.crt").read_bytes(), RELEASE_NS
        ),
        api_server=("127.0.0.1", 443),
        cluster_names=["kubernetes.default.svc", "kubernetes.default", "kubernetes"],
    )
    try:
        eventually(lambda: pod.probe("livenessProbe") == 200, what="operator liveness")
        yield pod
    finally:
        print(f"--- operator log (tail) ---\n{pod.tail()}")
        pod.remove()
        service.stop()


@pytest.fixture(scope="module")
def example(
    control_plane: ControlPlane, nats_server: EmbeddedNats, operator_pod: Pod
) -> dict[str, Any]:
    """The example gateway and channels, reconciled by the operator from the image."""
    cp = control_plane
    gateway = yaml.safe_load((REPO / "examples/realtimegateway.yaml").read_text())
    gateway["spec"]["nats"]["url"] = nats_server.url
    channels = list(yaml.safe_load_all((REPO / "examples/channels.yaml").read_text()))
    jwt_secret = secrets.token_urlsafe(32)
    ref = gateway["spec"]["auth"]["secretRef"]
    cp.kubectl("create", "namespace", APP_NS)
    cp.kubectl(
        "create", "secret", "generic", ref["name"], "-n", APP_NS,
        f"--from-literal={ref['key']}={jwt_secret}",
    )  # fmt: skip
    cp.kubectl("apply", "-n", APP_NS, "-f", "-", input=yaml.safe_dump_all([gateway, *channels]))
    name = gateway["metadata"]["name"]

    def channels_ready() -> bool:
        for channel in channels:
            obj = get(cp, "channel", channel["metadata"]["name"], APP_NS) or {}
            conditions = (obj.get("status") or {}).get("conditions") or []
            if not any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                return False
        return True

    eventually(channels_ready, what="every Channel Ready")
    eventually(lambda: get(cp, "deployment", name, APP_NS), what="the gateway's Deployment")
    return {"name": name, "channels": channels, "secret": jwt_secret}


def test_operator_from_the_image_reconciles_the_example_under_the_charts_account(
    control_plane: ControlPlane, nats_server: EmbeddedNats, operator_pod: Pod, example
):
    cp = control_plane
    name = example["name"]
    for kind, child in (("configmap", f"{name}-config"), ("service", name)):
        assert get(cp, kind, child, APP_NS) is not None, f"{kind} {child} missing"

    async def stream_names() -> set[str]:
        nc = await nats.connect(nats_server.url)
        try:
            return {info.config.name or "" for info in await nc.jetstream().streams_info()}
        finally:
            await nc.close()

    config_map = get(cp, "configmap", f"{name}-config", APP_NS) or {}
    config = yaml.safe_load(config_map["data"]["gateway.yaml"])
    expected = {
        stream_name(config["nats"]["subject_prefix"], namespace)
        for namespace, settings in config["namespaces"].items()
        if settings["history_messages"] > 0
    }
    assert expected
    assert expected <= asyncio.run(stream_names())
    assert operator_pod.probe("livenessProbe") == 200
    assert operator_pod.process.poll() is None
    assert "forbidden" not in operator_pod.tail(10_000).lower()


@pytest.fixture(scope="module")
def gateway_pod(
    image: Image, control_plane: ControlPlane, example: dict[str, Any], host_ports: None
) -> Iterator[Pod]:
    cp = control_plane
    deployment = get(cp, "deployment", example["name"], APP_NS)
    assert deployment is not None
    spec = deployment["spec"]["template"]["spec"]
    config_maps = {}
    secrets_ = {}
    for volume in spec["volumes"]:
        if "configMap" in volume:
            source = volume["configMap"]["name"]
            config_maps[source] = (get(cp, "configmap", source, APP_NS) or {})["data"]
        if "secret" in volume:
            source = volume["secret"]["secretName"]
            secrets_[source] = secret_data(get(cp, "secret", source, APP_NS) or {})
    pod = Pod.start(image, spec, "gateway", config_maps=config_maps, secrets=secrets_)
    try:
        eventually(lambda: pod.probe("readinessProbe") == 200, what="gateway readiness")
        yield pod
    finally:
        print(f"--- gateway log (tail) ---\n{pod.tail()}")
        pod.remove()


def _token(control_plane: ControlPlane, example: dict[str, Any], user: str) -> str:
    config_map = get(control_plane, "configmap", f"{example['name']}-config", APP_NS) or {}
    auth = yaml.safe_load(config_map["data"]["gateway.yaml"])["auth"]
    return mint_token(
        example["secret"],
        user,
        channels=["agent:*"],
        publish=["agent:*"],
        issuer=auth.get("issuer"),
        audience=auth.get("audience"),
    )


def _ws_url(pod: Pod) -> str:
    port = next(p["containerPort"] for p in pod.container_spec["ports"] if p["name"] == "http")
    return f"ws://127.0.0.1:{port}/ws"


def test_gateway_from_the_image_serves_a_client_as_the_deployment_starts_it(
    control_plane: ControlPlane, example: dict[str, Any], gateway_pod: Pod
):
    assert gateway_pod.probe("readinessProbe") == 200
    assert gateway_pod.probe("livenessProbe") == 200
    token = _token(control_plane, example, "image-user")

    async def roundtrip() -> list[Any]:
        async with Client(_ws_url(gateway_pod), token, reconnect=False) as client:
            subscription = await client.subscribe("agent:image")
            sent = [await client.publish("agent:image", {"n": n}) for n in range(3)]
            received = [await subscription.get(timeout=10) for _ in sent]
            assert [m.seq for m in received] == [p.seq for p in sent]
            return [m.payload for m in received]

    assert asyncio.run(roundtrip()) == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_gateway_from_the_image_drains_on_pod_deletion_within_the_grace_period(
    control_plane: ControlPlane, example: dict[str, Any], gateway_pod: Pod
):
    outcome: dict[str, Any] = {}

    def delete_pod() -> None:
        try:
            outcome["seconds"] = gateway_pod.terminate()
        except BaseException as e:
            outcome["error"] = e

    async def watch() -> tuple[list[int], list[int]]:
        async with aiohttp.ClientSession() as http:
            sockets = []
            for n in range(4):
                token = _token(control_plane, example, f"draining-{n}")
                ws = await http.ws_connect(f"{_ws_url(gateway_pod)}?token={token}")
                assert (await ws.receive_json())["type"] == "authenticated"
                sockets.append(ws)
            deleter = threading.Thread(target=delete_pod)
            deleter.start()
            closes = asyncio.gather(*(ws.receive() for ws in sockets))
            readiness: list[int] = []
            while not closes.done():
                readiness.append(await asyncio.to_thread(gateway_pod.probe, "readinessProbe"))
                await asyncio.sleep(0.2)
            await asyncio.to_thread(deleter.join)
            codes = []
            for message in closes.result():
                assert message.type is aiohttp.WSMsgType.CLOSE, message
                codes.append(int(message.data))
            return codes, readiness

    codes, readiness = asyncio.run(watch())
    # Exited by itself, with 0, before the grace period ended (terminate raises otherwise).
    assert "error" not in outcome, outcome.get("error")
    assert codes == [CloseCode.SERVICE_RESTART] * 4
    # Ready through the preStop pause, refused once SIGTERM starts the drain.
    assert readiness[0] == 200
    assert 503 in readiness
