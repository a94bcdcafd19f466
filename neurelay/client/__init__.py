"""Async Python client for Neurelay gateways, with reconnect and resume.

async with Client("ws://127.0.0.1:8080/ws", token) as client:
    subscription = await client.subscribe("agent:42")
    await client.publish("agent:42", {"status": "idle"})
    async for message in subscription:
        print(message.seq, message.payload)

Every error the client raises on purpose is a `ClientError`: `ServerError`
(the gateway refused a request; `code` is an `ErrorCode`), `RequestTimeout`,
`IdInFlight` (a publish with the id of one still awaiting its reply) and
`ConnectionLost`, all exported here.
"""

from neurelay.client.connection import Client
from neurelay.client.subscription import Subscription
from neurelay.errors import (
    ClientError,
    ConnectionLost,
    IdInFlight,
    NeurelayError,
    RequestTimeout,
    ServerError,
)
from neurelay.protocol.codes import CloseCode, ErrorCode
from neurelay.protocol.server_frames import (
    Join,
    Leave,
    Member,
    Message,
    Presence,
    PresenceStats,
    Published,
)

__all__ = [
    "Client",
    "ClientError",
    "CloseCode",
    "ConnectionLost",
    "ErrorCode",
    "IdInFlight",
    "Join",
    "Leave",
    "Member",
    "Message",
    "NeurelayError",
    "Presence",
    "PresenceStats",
    "Published",
    "RequestTimeout",
    "ServerError",
    "Subscription",
]
