"""One user flooding the HTTP API: refused with 429 past their rate, nobody else slowed.

The flooder's requests beyond the burst are answered `rate_limited` and not
carried out (the channel's history holds exactly the accepted ones); another
user's requests still succeed meanwhile, and a WebSocket bystander on the
same gateway loses nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.abuse.bystander import Bystander, scaled

BURST = 10


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_user_flooding_publish_is_held_to_the_burst_and_others_are_served(
    gateway_factory: Any, make_config: Any, connect: Any, token: Any
) -> None:
    # A rate this small refills nothing during the test: exactly the burst gets through.
    limits = {"http_requests_per_second": 0.001, "http_burst": BURST}
    running = await gateway_factory(make_config(limits=limits))
    bystander = await Bystander(connect, running.ws_url, token(user="bystander")).start()
    url = running.http_url + "/api/v1/publish"
    flooder = _auth(token(user="flooder"))
    total = scaled(200, 2000)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=50)) as session:

        async def publish(n: int, headers: dict[str, str]) -> tuple[int, int, str | None]:
            body = {"channel": "agent:flood", "payload": n, "id": f"m{n}"}
            async with session.post(url, json=body, headers=headers) as response:
                answer = await response.json()
                return n, response.status, answer.get("code")

        flood = asyncio.gather(*(publish(n, flooder) for n in range(total)))
        innocent = await publish(-1, _auth(token(user="innocent")))
        results = await flood

        accepted = sorted(n for n, status, _ in results if status == 200)
        refused = [(status, code) for _, status, code in results if status != 200]
        assert innocent[1] == 200
        assert len(accepted) == BURST
        assert set(refused) == {(429, "rate_limited")}

        history_url = running.http_url + "/api/v1/channels/agent:flood/history"
        async with session.get(history_url, headers=_auth(token(user="auditor"))) as response:
            history = await response.json()
    stored = sorted(m["payload"] for m in history["messages"])
    assert stored == sorted([*accepted, -1])
    await bystander.finish()
