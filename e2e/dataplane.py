"""The data plane on one machine: a 3-node NATS cluster, three gateway replicas, nginx in front.

Streams keep three replicas, so one NATS node may die; gateways fail over
between the NATS nodes; clients reach gateways only through nginx, as they
would through an ingress.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from e2e.ingress import Ingress
from neurelay.embedded import ClusterMembership, EmbeddedNats, free_port
from tests.support.processes import GatewayProcess

NODES = 3


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
            GatewayProcess(self.root, f"gateway-{n}", _deep_copy(config)) for n in range(replicas)
        ]
        self.ingress = Ingress(self.root / "nginx", [g.port for g in self.gateways])

    async def start(self) -> DataPlane:
        try:
            for node in self.nats:
                node.start()
            for gateway in self.gateways:
                gateway.spawn()
            for gateway in self.gateways:
                await gateway.wait_ready(90)
            self.ingress.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.ingress.stop()
        for gateway in self.gateways:
            gateway.stop()
        for node in self.nats:
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _deep_copy(config: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in config.items()}
