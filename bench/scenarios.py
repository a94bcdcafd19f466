"""Scenarios and their parameters at each size, as load generator configurations.

`full` is the benchmark documented in docs/performance.md; `tiny` runs every
code path in a few seconds and proves nothing about speed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SCENARIOS = ("fanout", "channels", "streaming", "storm", "idle", "cluster")
PAYLOAD_BYTES = 128  # the bench message body, the same for every system
CLUSTER_CONNECTIONS = 30_000


@dataclass(frozen=True)
class Variant:
    key: str
    title: str
    config: dict[str, Any]


def _fanout(subscribers: int, full: bool) -> Variant:
    start_deliveries = 5_000 if full else 400
    return Variant(
        key=f"{subscribers}",
        title=f"{subscribers:,} subscribers on one channel",
        config={
            "mode": "traffic",
            "subscribers": subscribers,
            "channels": ["agent:fanout"],
            "publishers": 4 if full else 1,
            "streams": [
                {
                    "channel": "agent:fanout",
                    "count": 1,
                    "rate": start_deliveries / subscribers,
                }
            ],
            "step_seconds": 4 if full else 0.5,
            "ramp_factor": 1.5 if full else 2,
            "max_steps": 20 if full else 2,
            "half_step": True,
            "breakdown_p99_ms": 500,
            "breakdown_ratio": 0.9,
            "connect_concurrency": 64,
        },
    )


def variants(scenario: str, size: str) -> list[Variant]:
    full = size == "full"
    if scenario == "fanout":
        return [_fanout(n, full) for n in ((1000, 5000) if full else (20,))]
    if scenario == "channels":
        n = 10_000 if full else 20
        return [
            Variant(
                key=f"{n}",
                title=f"{n:,} connections, each on its own user: channel and on system",
                config={
                    "mode": "traffic",
                    "subscribers": n,
                    "channels": ["user:u{i}", "system"],
                    "publishers": 8 if full else 1,
                    "streams": [
                        {
                            "channel": "user:u{i}",
                            "count": n,
                            "rate": 250 if full else 10,
                        },
                        {"channel": "system", "count": 1, "rate": 1 if full else 2},
                    ],
                    "step_seconds": 5 if full else 0.5,
                    "ramp_factor": 2,
                    "max_steps": 5 if full else 1,
                    "breakdown_p99_ms": 500,
                    "connect_concurrency": 64,
                },
            )
        ]
    if scenario == "streaming":
        n = 100 if full else 5
        per = 50 if full else 10
        return [
            Variant(
                key=f"{n}x{per}",
                title=f"{n} conversations, {per} messages per second each",
                config={
                    "mode": "traffic",
                    "subscribers": n,
                    "channels": ["conversation:c{i}"],
                    "publishers": n,
                    "streams": [{"channel": "conversation:c{i}", "count": n, "rate": n * per}],
                    "step_seconds": 10 if full else 0.5,
                    "max_steps": 1,
                    "breakdown_p99_ms": 500,
                    "connect_concurrency": 32,
                },
            )
        ]
    if scenario == "storm":
        n = 5000 if full else 50
        return [
            Variant(
                key=f"{n}",
                title=f"{n:,} clients connecting and authenticating at once",
                config={
                    "mode": "storm",
                    "subscribers": n,
                    "settle_seconds": 2 if full else 0.1,
                },
            )
        ]
    if scenario == "idle":
        n = 15_000 if full else 40
        return [
            Variant(
                key=f"{n}",
                title=f"up to {n:,} idle authenticated connections",
                config={
                    "mode": "idle",
                    "subscribers": n,
                    "batch": 1500 if full else 20,
                    "settle_seconds": 2 if full else 0.1,
                    "hold_seconds": 15 if full else 0.2,
                    "connect_concurrency": 64,
                },
            )
        ]
    if scenario == "cluster":
        # Spread over three gateways by the load generator (connection i on gateway i mod 3).
        n = CLUSTER_CONNECTIONS if full else 30
        return [
            Variant(
                key=f"{n}",
                title=f"{n:,} connections over three gateways on a 3-node NATS cluster, each on "
                "its own user: channel and on system",
                config={
                    "mode": "traffic",
                    "subscribers": n,
                    "channels": ["user:u{i}", "system"],
                    "publishers": 9 if full else 3,
                    "streams": [
                        {"channel": "user:u{i}", "count": n, "rate": 300 if full else 10},
                        {"channel": "system", "count": 1, "rate": 1 if full else 2},
                    ],
                    "step_seconds": 5 if full else 0.5,
                    "ramp_factor": 2,
                    "max_steps": 3 if full else 1,
                    "breakdown_p99_ms": 500,
                    "connect_concurrency": 48,
                    # Several load generators share the load (tiny: proves the merge).
                    "processes": 3,
                },
            )
        ]
    raise ValueError(f"unknown scenario {scenario!r}; one of {', '.join(SCENARIOS)}")
