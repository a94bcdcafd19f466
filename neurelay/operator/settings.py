"""The operator's tunables: OperatorSettings (intervals, back-off, NATS timeouts) and
ServingSettings (where /healthz and /metrics listen).

Passed explicitly to everything that needs them; `neurelay operator`
builds them from its command-line arguments and tests shorten the intervals.
"""

from __future__ import annotations

import dataclasses

from neurelay.backoff import Backoff
from neurelay.operator import GROUP

PAUSED_ANNOTATION = f"{GROUP}/paused"
FINALIZER = f"{GROUP}/stream"
# "true" on a Channel whose stream cannot be deleted lets the Channel go, the stream left in place.
ABANDON_STREAM_ANNOTATION = f"{GROUP}/abandon-stream"
DEFAULT_PEERING = "neurelay-operator"


@dataclasses.dataclass(frozen=True)
class OperatorSettings:
    drift_interval_seconds: float = 30.0
    """How often each gateway's Channels are compared with its streams (one listing a gateway)."""

    gateway_resync_seconds: float = 300.0
    """How often each RealtimeGateway is reconciled without any event: a safety net behind the
    watches of its children and Secrets (a missed watch event, a label removed by hand)."""

    gateway_settle_seconds: float = 0.5
    """How long a gateway reconcile asked for by an event waits for more asks, so that a burst
    (1,000 Channels applied at once) rewrites the gateway's ConfigMap a few times, not 1,000."""

    retry_base_seconds: float = 2.0
    """First retry delay after a failure; doubles with each retry (each delay jittered)."""

    retry_max_seconds: float = 120.0
    """Longest retry delay."""

    nats_connect_timeout_seconds: float = 3.0
    nats_request_timeout_seconds: float = 5.0

    def backoff(self, retry: int) -> float:
        """Delay before retry number `retry` (0-based): exponential, capped, jittered."""
        return Backoff(self.retry_base_seconds, self.retry_max_seconds).delay(retry)


@dataclasses.dataclass(frozen=True)
class ServingSettings:
    """Where the operator serves kopf's liveness endpoint (/healthz) and its metrics (/metrics)."""

    liveness_address: str = "0.0.0.0"
    """Address /healthz binds to: every IPv4 interface, so the kubelet's probe reaches it."""

    liveness_port: int | None = 8081
    """Port of /healthz; None serves none."""

    metrics_address: str = "0.0.0.0"
    """Address /metrics binds to: every IPv4 interface, so Prometheus can scrape the pod."""

    metrics_port: int | None = 9090
    """Port of /metrics; None serves none."""

    def liveness_endpoint(self) -> str | None:
        """The URL kopf serves /healthz on, or None."""
        if self.liveness_port is None:
            return None
        host = (
            f"[{self.liveness_address}]" if ":" in self.liveness_address else self.liveness_address
        )
        return f"http://{host}:{self.liveness_port}/healthz"
