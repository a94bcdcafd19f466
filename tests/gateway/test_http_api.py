"""HTTP endpoints: publish and history for backend services, health, readiness, metrics."""

from __future__ import annotations

import aiohttp
import pytest

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_publish_answers_seq_and_reaches_websocket_subscribers(gateway, http, connect, token):
    subscriber = await connect(gateway.ws_url, token(user="bob"))
    await subscriber.request({"type": "subscribe", "channel": "agent:api"})
    async with http.post(
        gateway.http_url + "/api/v1/publish",
        json={"channel": "agent:api", "payload": {"state": "done"}, "id": "job-1"},
        headers=_auth(token(user="backend", publish=("agent:*",))),
    ) as response:
        assert response.status == 200
        body = await response.json()
    assert body == {"channel": "agent:api", "seq": body["seq"], "id": "job-1", "duplicate": False}
    message = await subscriber.recv()
    assert (message["seq"], message["payload"], message["id"]) == (
        body["seq"],
        {"state": "done"},
        "job-1",
    )


@pytest.mark.parametrize(
    ("body", "headers_kind", "status", "code"),
    [
        ({"channel": "agent:1", "payload": 1}, None, 401, "unauthenticated"),
        ({"channel": "agent:1", "payload": 1}, "garbage", 401, "auth_failed"),
        ({"channel": "agent:1", "payload": 1}, "expired", 401, "token_expired"),
        ({"channel": "user:x", "payload": 1}, "good", 403, "forbidden"),
        ({"channel": "agent:*", "payload": 1}, "good", 400, "invalid_channel"),
        ({"channel": "nope:1", "payload": 1}, "good", 400, "invalid_channel"),
        ({"channel": "agent:1"}, "good", 400, "bad_request"),
        ({"channel": "agent:1", "payload": 1, "extra": 2}, "good", 400, "bad_request"),
        ({"type": "publish", "channel": "agent:1", "payload": 1}, "good", 400, "bad_request"),
        ([1, 2], "good", 400, "bad_request"),
    ],
)
async def test_publish_refusals(gateway, http, token, body, headers_kind, status, code):
    headers = {
        None: {},
        "garbage": _auth("garbage"),
        "expired": _auth(token(ttl=-5)),
        "good": _auth(token()),
    }[headers_kind]
    async with http.post(
        gateway.http_url + "/api/v1/publish", json=body, headers=headers
    ) as response:
        assert response.status == status
        assert (await response.json())["code"] == code


async def test_publish_of_invalid_json_and_oversized_bodies(
    gateway_factory, make_config, http, token
):
    running = await gateway_factory(make_config(limits={"max_message_bytes": 1024}))
    url = running.http_url + "/api/v1/publish"
    async with http.post(url, data=b"{nope", headers=_auth(token())) as response:
        assert (response.status, (await response.json())["code"]) == (400, "bad_request")
    big = {"channel": "agent:1", "payload": "z" * 4000}
    async with http.post(url, json=big, headers=_auth(token())) as response:
        assert (response.status, (await response.json())["code"]) == (413, "message_too_large")


async def test_history_since_and_limit(gateway, http, connect, token):
    client = await connect(gateway.ws_url, token())
    seqs = [
        (await client.request({"type": "publish", "channel": "agent:hist", "payload": n}))["seq"]
        for n in range(5)
    ]
    url = gateway.http_url + "/api/v1/channels/agent:hist/history"
    async with http.get(
        url, params={"since": seqs[1], "limit": 2}, headers=_auth(token())
    ) as response:
        assert response.status == 200
        body = await response.json()
    assert [m["payload"] for m in body["messages"]] == [2, 3]
    assert [m["seq"] for m in body["messages"]] == seqs[2:4]
    assert body["recovered"] is True


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("/api/v1/channels/user:bob/history", {}, 403, "forbidden"),
        ("/api/v1/channels/agent:x/history", {"since": "-1"}, 400, "bad_request"),
        ("/api/v1/channels/agent:x/history", {"limit": "0"}, 400, "bad_request"),
        ("/api/v1/channels/agent:x/history", {"limit": "many"}, 400, "bad_request"),
        ("/api/v1/channels/agent*/history", {}, 400, "invalid_channel"),
    ],
)
async def test_history_refusals(gateway, http, token, path, params, status, code):
    async with http.get(gateway.http_url + path, params=params, headers=_auth(token())) as response:
        assert response.status == status
        assert (await response.json())["code"] == code


async def test_health_readiness_and_metrics(gateway, http, connect, token):
    client = await connect(gateway.ws_url, token())
    await client.request({"type": "subscribe", "channel": "agent:m"})
    await client.request({"type": "publish", "channel": "agent:m", "payload": 1})
    await client.request({"type": "subscribe", "channel": "agent:*"})
    async with http.get(gateway.http_url + "/healthz") as response:
        assert response.status == 200
    async with http.get(gateway.http_url + "/readyz") as response:
        assert response.status == 200
    async with http.get(gateway.http_url + "/metrics") as response:
        text = await response.text()
    assert "neurelay_connections 1.0" in text
    assert 'neurelay_messages_in_total{namespace="agent"} 1.0' in text
    assert 'neurelay_messages_out_total{namespace="agent"} 1.0' in text
    assert 'neurelay_rejections_total{code="invalid_channel"} 1.0' in text
    assert "neurelay_fanout_seconds_bucket" in text
    assert "neurelay_nats_reconnects_total" in text


async def test_plain_http_get_on_the_websocket_endpoint_is_bad_request(gateway, http):
    async with http.get(gateway.http_url + "/ws") as response:
        assert response.status == 400
        assert (await response.json())["code"] == "bad_request"


async def test_a_token_in_the_url_is_refused_by_the_http_api(gateway, http, token):
    async with http.post(
        gateway.http_url + "/api/v1/publish",
        params={"token": token()},
        json={"channel": "agent:url", "payload": 1},
    ) as response:
        assert response.status == 400
        body = await response.json()
    assert body["code"] == "bad_request"
    assert "Authorization" in body["message"]
    async with http.get(
        gateway.http_url + "/api/v1/channels/agent:url/history",
        params={"token": token()},
        headers=_auth(token()),
    ) as response:
        assert response.status == 400


async def test_a_user_over_the_http_request_rate_gets_429_and_nothing_is_published(
    gateway_factory, make_config, http, token
):
    running = await gateway_factory(
        make_config(limits={"http_requests_per_second": 0.001, "http_burst": 3})
    )
    statuses = []
    for n in range(5):
        async with http.post(
            running.http_url + "/api/v1/publish",
            json={"channel": "agent:rate", "payload": n},
            headers=_auth(token()),
        ) as response:
            statuses.append(response.status)
            body = await response.json()
    assert statuses == [200, 200, 200, 429, 429]
    assert body["code"] == "rate_limited"
    async with http.get(
        running.http_url + "/api/v1/channels/agent:rate/history", headers=_auth(token())
    ) as response:
        assert response.status == 429  # history counts against the same rate
    async with http.get(
        running.http_url + "/api/v1/channels/agent:rate/history",
        headers=_auth(token(user="bob")),
    ) as response:
        assert response.status == 200
        history = await response.json()
    assert [m["payload"] for m in history["messages"]] == [0, 1, 2]
