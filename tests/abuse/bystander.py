"""An innocent client for abuse tests: it keeps publishing on its own channel and must lose nothing.

`Bystander.start` connects, subscribes and publishes a message every few
hundredths of a second in the background; `finish` stops and asserts that
every message the gateway acknowledged came back exactly once, in order. The
scale of the attacks comes from `NEURELAY_ABUSE_SCALE` (`ci`, the default,
or `full` for the sizes the hardening issue reported).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Callable
from typing import Any

FULL = os.environ.get("NEURELAY_ABUSE_SCALE", "ci") == "full"


def scaled(ci: int, full: int) -> int:
    return full if FULL else ci


class Bystander:
    def __init__(self, connect: Callable[..., Any], url: str, token: str) -> None:
        self._connect = connect
        self._url = url
        self._token = token
        self.channel = f"agent:bystander-{secrets.token_hex(3)}"
        self.acknowledged: list[int] = []
        self.refused: list[str] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[list[dict[str, Any]]] | None = None

    async def start(self) -> Bystander:
        client = await self._connect(self._url, self._token)
        reply = await client.request({"type": "subscribe", "channel": self.channel})
        assert reply["type"] == "subscribed", reply
        self._task = asyncio.create_task(self._run(client), name="bystander")
        return self

    async def _run(self, client: Any) -> list[dict[str, Any]]:
        n = 0
        while not self._stop.is_set():
            frame = {"type": "publish", "channel": self.channel, "payload": {"n": n}}
            reply = await client.request(frame, timeout=30.0)
            if reply["type"] == "published":
                self.acknowledged.append(reply["seq"])
            else:
                # Refused publishes (NATS cut by the test) are not promised to anyone.
                self.refused.append(reply["code"])
            n += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.03)
        received: list[dict[str, Any]] = []
        expected = set(self.acknowledged)
        while expected - {m["seq"] for m in received}:
            frame = await client.recv(timeout=30.0)
            if frame["type"] == "message":
                received.append(frame)
        return received

    async def finish(self) -> None:
        """Stop publishing; every acknowledged message arrived once, in order."""
        assert self._task is not None
        self._stop.set()
        received = await self._task
        seqs = [m["seq"] for m in received]
        assert seqs == sorted(set(seqs)), "bystander got duplicates or disorder"
        assert set(self.acknowledged) <= set(seqs)
        assert self.acknowledged, "the bystander could not publish at all"
