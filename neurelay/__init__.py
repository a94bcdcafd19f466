"""Neurelay: the realtime layer of the NEURECTOMY agent platform.

Clients hold one WebSocket each to a gateway (`neurelay.gateway`), speak the
protocol defined in `neurelay.protocol` (documented in docs/protocol.md), and
NATS JetStream carries messages between gateway replicas and keeps history.
"""

__version__ = "0.1.0"
