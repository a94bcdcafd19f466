"""Async Python client for Neurelay gateways, with reconnect and resume.

async with Client("ws://127.0.0.1:8080/ws", token) as client:
    subscription = await client.subscribe("agent:42")
    await client.publish("agent:42", {"status": "idle"})
    async for message in subscription:
        print(message.seq, message.payload)
"""

from neurelay.client.connection import Client, Message, Published, Subscription

__all__ = ["Client", "Message", "Published", "Subscription"]
