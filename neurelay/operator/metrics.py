"""OperatorMetrics: Prometheus counters of the operator, in their own registry.

Served by `running` on the metrics port (`/metrics`); kopf's own liveness
endpoint is separate.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.reconciliations = Counter(
            "neurelay_operator_reconciliations",
            "Reconciliations by kind and result (ok, retry, conflict, paused, refused).",
            ["kind", "result"],
            registry=self.registry,
        )
        self.stream_actions = Counter(
            "neurelay_operator_stream_actions",
            "JetStream stream changes by action (created, updated, recreated, deleted, ...).",
            ["action"],
            registry=self.registry,
        )
