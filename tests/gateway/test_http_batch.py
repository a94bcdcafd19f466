"""`POST /api/v1/publish` with a batch: in order, once, one result per message."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def post(http, gateway, token: str, body: Any) -> tuple[int, Any]:
    async with http.post(
        gateway.http_url + "/api/v1/publish",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        return response.status, await response.json()


async def test_a_batch_reaches_subscribers_in_order_once(gateway, http, connect, token):
    subscriber = await connect(gateway.ws_url, token(user="bob"))
    await subscriber.request({"type": "subscribe", "channel": "agent:b"})
    batch = [{"channel": "agent:b", "payload": n, "id": f"m{n}"} for n in range(80)]
    status, body = await post(http, gateway, token(user="svc"), batch)
    assert status == 200
    results = body["results"]
    assert [r["id"] for r in results] == [f"m{n}" for n in range(80)]
    assert not any(r["duplicate"] for r in results)
    received = [await subscriber.recv() for _ in range(80)]
    assert [m["payload"] for m in received] == list(range(80))
    assert [m["seq"] for m in received] == [r["seq"] for r in results]
    assert [r["seq"] for r in results] == sorted({r["seq"] for r in results})


async def test_a_batch_sent_again_is_stored_once(gateway, http, connect, token):
    subscriber = await connect(gateway.ws_url, token(user="bob"))
    await subscriber.request({"type": "subscribe", "channel": "agent:r"})
    batch = [{"channel": "agent:r", "payload": n, "id": n} for n in range(5)]
    _, first = await post(http, gateway, token(user="svc"), batch)
    _, again = await post(http, gateway, token(user="svc"), batch)
    assert [r["seq"] for r in again["results"]] == [r["seq"] for r in first["results"]]
    assert all(r["duplicate"] for r in again["results"])
    assert [(await subscriber.recv())["payload"] for _ in range(5)] == list(range(5))
    marker = await subscriber.request({"type": "publish", "channel": "agent:r", "payload": "end"})
    assert (await subscriber.recv())["seq"] == marker["seq"]  # nothing twice in between


async def test_each_message_of_a_batch_is_authorized_on_its_own(gateway, http, token):
    batch = [
        {"channel": "agent:ok", "payload": 1},
        {"channel": "conversation:no", "payload": 2},
        {"channel": "agent:ok", "payload": 3},
    ]
    status, body = await post(http, gateway, token(user="svc", publish=("agent:*",)), batch)
    assert status == 200
    codes = [r.get("code") for r in body["results"]]
    assert codes == [None, "forbidden", None]
    assert body["results"][2]["seq"] == body["results"][0]["seq"] + 1


@pytest.mark.parametrize(
    "batch",
    [
        [],
        [{"channel": "agent:x", "payload": 1}, "not an object"],
        [{"channel": "agent:x", "payload": 1}, {"channel": "bad channel", "payload": 2}],
        [{"channel": "agent:x", "payload": 1, "type": "publish"}],
        [{"channel": "agent:x", "payload": n} for n in range(1001)],
    ],
    ids=["empty", "not-an-object", "invalid-channel", "with-type", "too-many"],
)
async def test_an_invalid_batch_is_refused_whole_and_publishes_nothing(
    gateway, http, connect, token, batch
):
    subscriber = await connect(gateway.ws_url, token(user="bob"))
    await subscriber.request({"type": "subscribe", "channel": "agent:x"})
    status, body = await post(http, gateway, token(user="svc"), batch)
    assert status == 400
    assert body["code"] in ("bad_request", "invalid_channel")
    marker = await subscriber.request({"type": "publish", "channel": "agent:x", "payload": "end"})
    assert (await subscriber.recv())["seq"] == marker["seq"]
