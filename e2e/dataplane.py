"""The data plane on one machine: a 3-node NATS cluster, three gateway replicas, nginx in front.

The gateways run the configuration the operator renders for a
RealtimeGateway and its Channels (`rendered_config`), changed only where
this machine differs from a pod: the listening port, the NATS addresses and
the path of the secret. The streams are created as the operator creates
them (`desired_stream`), with three replicas, so one NATS node may die;
gateways fail over between the NATS nodes; clients reach gateways only
through nginx, as they would through an ingress.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
import yaml

from e2e.ingress import Ingress
from neurelay.embedded import ClusterMembership, EmbeddedNats, free_port
from neurelay.jetstream.streams import desired_stream
from neurelay.operator import naming, render
from neurelay.operator.models import ChannelSpec, RealtimeGatewaySpec
from tests.support.processes import GatewayProcess

NODES = 3
PRESENCE_TTL_SECONDS = 3.0
GATEWAY = naming.GatewayRef(namespace="e2e", name="neurelay", uid="e2e")
SPEC = RealtimeGatewaySpec.model_validate(
    {
        "replicas": 3,
        "nats": {"url": "nats://nats.e2e.svc:4222"},
        "auth": {"secretRef": {"name": "neurelay-jwt", "key": "secret"}},
        "limits": {"connectionsPerUser": 5, "messagesPerSecond": 1000},
        "drainPeriodSeconds": 2,
        # Small, so a killed gateway's members leave within seconds.
        "presence": {"ttlSeconds": PRESENCE_TTL_SECONDS},
        "logLevel": "WARNING",
    }
)
CHANNELS = [
    ChannelSpec.model_validate({"gateway": "neurelay", "namespace": ns, **extra})
    for ns, extra in (
        ("agent", {"history": {"messages": 100, "replicas": 3}}),
        ("user", {"history": {"messages": 100, "replicas": 3}}),
        (
            "conversation",
            {"history": {"messages": 1000, "replicas": 3}, "presence": True, "joinLeave": True},
        ),
        ("system", {"history": {"messages": 100, "replicas": 3}}),
        ("metrics", {"history": {"messages": 0}}),
    )
]


def rendered_config(secret_file: Path) -> dict[str, Any]:
    """The operator's ConfigMap content for SPEC and CHANNELS, with this machine's secret path."""
    text = render.config_yaml(render.gateway_config(GATEWAY, SPEC, CHANNELS))
    config: dict[str, Any] = yaml.safe_load(text)
    config["auth"]["secret_file"] = str(secret_file)
    return config


class DataPlane:
    def __init__(self, gateway_config: dict[str, Any], replicas: int = 3) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="neurelay-e2e-"))
        route_ports = [free_port() for _ in range(NODES)]
        self.nats = [
            EmbeddedNats(
                store_dir=self.root / f"nats-{n}",
                log_file=self.root / f"nats-{n}.log",
                cluster=ClusterMembership(
                    name="neurelay-e2e",
                    server_name=f"n{n}",
                    port=route_ports[n],
                    routes=tuple(p for i, p in enumerate(route_ports) if i != n),
                ),
            )
            for n in range(NODES)
        ]
        for node in self.nats:
            node.store_dir.mkdir(parents=True, exist_ok=True)
        config = dict(gateway_config)
        config["nats"] = {**config.get("nats", {}), "servers": [n.url for n in self.nats]}
        self.gateways = [
            GatewayProcess(
                self.root,
                f"gateway-{n}",
                {**_deep_copy(config), "server": {"host": "127.0.0.1", "port": free_port()}},
            )
            for n in range(replicas)
        ]
        self.ingress = Ingress(self.root / "nginx", [g.port for g in self.gateways])

    async def start(self) -> DataPlane:
        try:
            for node in self.nats:
                node.start()
            await self._create_streams()
            for gateway in self.gateways:
                gateway.spawn()
            for gateway in self.gateways:
                await gateway.wait_ready(90)
            self.ingress.start()
        except BaseException:
            self.stop()
            raise
        return self

    async def _create_streams(self) -> None:
        """What the operator does for each Channel; retried while the cluster elects a leader."""
        config = self.gateways[0].config
        prefix = config["nats"]["subject_prefix"]
        nc = await nats.connect([n.url for n in self.nats])
        try:
            js = nc.jetstream(timeout=10)
            for channel in CHANNELS:
                settings = channel.settings()
                if not settings.keeps_history:
                    continue
                for _ in range(60):
                    try:
                        await js.add_stream(desired_stream(prefix, channel.namespace, settings))
                        break
                    except (nats.errors.Error, nats.js.errors.Error, TimeoutError):
                        await asyncio.sleep(0.5)
                else:
                    raise RuntimeError(f"stream for {channel.namespace} not created")
        finally:
            await nc.close()

    def stop(self) -> None:
        self.ingress.stop()
        for gateway in self.gateways:
            gateway.stop()
        for node in self.nats:
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _deep_copy(config: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in config.items()}
