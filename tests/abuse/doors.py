"""A token presented at both of the gateway's doors: an `authenticate` frame and the upgrade.

Abuse tests of odd tokens check that both refuse it the same way;
`answers_at_both_doors` gives each door's answer as (kind, code) and
(HTTP status, code).
"""

from __future__ import annotations

import base64
from typing import Any

import aiohttp

UPGRADE_HEADERS = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode(),
}


async def answers_at_both_doors(
    connect: Any, ws_url: str, token: str
) -> tuple[tuple[str, str], tuple[int, str]]:
    client = await connect(ws_url)
    in_frame = await client.request({"type": "authenticate", "token": token})
    async with (
        aiohttp.ClientSession() as session,
        session.get(ws_url + "?token=" + token, headers=UPGRADE_HEADERS) as response,
    ):
        at_upgrade = (response.status, (await response.json())["code"])
    return (in_frame["type"], in_frame.get("code", "")), at_upgrade
