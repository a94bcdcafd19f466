"""HTTP batch floods: messages counted per user, publishes in flight bounded per gateway.

A batch costs its number of messages against the user's HTTP publish rate
(it used to count as one request: one token published 20,000 messages in
10.7 s unhindered), and one larger than the user's burst is refused, naming
the largest. However many users post batches at once, the gateway carries out
only its budget of them (the others wait their turn, or are answered 503
`unavailable` whole), so what it keeps in the NATS pipeline stays small: the
flood used to put 20,000 publishes in flight, half of them failed with "no
ack in time", and so, now and then, did a WebSocket bystander's. Here the
bystander publishes throughout, is refused nothing and loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp

from neurelay.gateway.http_api import WINDOW
from tests.abuse.bystander import Bystander, scaled


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _batch(channel: str, count: int, first: int = 0, size: int = 10) -> list[dict[str, Any]]:
    return [
        {"channel": channel, "payload": {"n": n, "pad": "p" * size}, "id": f"{channel}-{n}"}
        for n in range(first, first + count)
    ]


async def test_a_batch_costs_its_messages_against_the_users_publish_rate(
    gateway_factory: Any, make_config: Any, connect: Any, token: Any
) -> None:
    # A rate this small refills nothing during the test: exactly the burst gets through.
    limits = {"http_publish_messages_per_second": 0.001, "http_publish_burst": 100}
    running = await gateway_factory(make_config(limits=limits))
    bystander = await Bystander(connect, running.ws_url, token(user="bystander")).start()
    url = running.http_url + "/api/v1/publish"
    flooder = _auth(token(user="flooder"))

    async with aiohttp.ClientSession() as session:

        async def post(body: Any, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
            async with session.post(url, json=body, headers=headers) as response:
                return response.status, await response.json()

        too_big = await post(_batch("agent:rate", 101), flooder)
        answers = [await post(_batch("agent:rate", 40, 40 * k), flooder) for k in range(3)]
        # Each request costs at least one message, refused or not: 100 - 1 - 80 - 1 left.
        rest = await post(_batch("agent:rate", 18, 120), flooder)
        single = await post({"channel": "agent:rate", "payload": "one more"}, flooder)
        innocent = await post(_batch("agent:rate", 50, 1000), _auth(token(user="innocent")))

        history_url = running.http_url + "/api/v1/channels/agent:rate/history"
        async with session.get(history_url, headers=_auth(token(user="auditor"))) as response:
            history = await response.json()

    assert too_big[0] == 400
    assert too_big[1]["code"] == "bad_request"
    assert "1 to 100 messages" in too_big[1]["message"]
    assert [status for status, _ in answers] == [200, 200, 429]
    assert answers[2][1]["code"] == "rate_limited"
    assert rest[0] == 200
    assert (single[0], single[1]["code"]) == (429, "rate_limited")
    assert innocent[0] == 200
    stored = sorted(m["payload"]["n"] for m in history["messages"])
    assert stored == sorted([*range(80), *range(120, 138), *range(1000, 1050)])[-100:]
    await bystander.finish()
    assert not bystander.refused


async def test_many_users_posting_batches_at_once_keep_few_publishes_in_flight(
    gateway_factory: Any, make_config: Any, connect: Any, token: Any
) -> None:
    # The smallest budget: one ~60 KB batch (plus its 64 KiB charge) at a time.
    limits = {
        "http_publish_bytes_in_flight": 128 * 1024,
        "http_publish_messages_per_second": 1_000_000,
        "http_requests_per_second": 1_000_000,
    }
    running = await gateway_factory(make_config(limits=limits))
    bystander = await Bystander(connect, running.ws_url, token(user="bystander")).start()
    url = running.http_url + "/api/v1/publish"
    bus = running.gateway.bus
    most = 0
    stop = asyncio.Event()

    async def watch() -> None:
        nonlocal most
        while not stop.is_set():
            most = max(most, bus.publishes_in_flight)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.001)

    watcher = asyncio.create_task(watch())
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:

        async def flood(user: int) -> tuple[int, dict[str, Any]]:
            body = _batch(f"agent:flood{user}", 200, size=250)
            async with session.post(url, json=body, headers=_auth(token(user=f"f{user}"))) as r:
                return r.status, await r.json()

        answers = await asyncio.gather(*(flood(u) for u in range(scaled(20, 100))))
    stop.set()
    await watcher

    assert {status for status, _ in answers} <= {200, 503}
    assert all(answer["code"] == "unavailable" for status, answer in answers if status == 503)
    served = [answer["results"] for status, answer in answers if status == 200]
    assert served, "no batch was carried out"
    assert all("seq" in result for results in served for result in results)
    # One batch's window, and the bystander's one publish.
    assert most <= WINDOW + 1
    await bystander.finish()
    assert not bystander.refused
