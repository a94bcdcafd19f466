"""The console and the JavaScript client in headless Chromium, against gateway processes.

The page's gateway runs as a child process on a fixed port, so a test can kill
it and start it again where the page reconnects; a second gateway on the same
NATS ("backend") is where Python publishes, so messages keep coming while the
page's gateway is down. Screenshots go to artifacts/.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import aiohttp
import pytest

from neurelay.client import Client
from tests.browser.conftest import Browser, DevProcess, ForeignSite
from tests.support.processes import GatewayProcess

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


async def open_console(chrome: Browser, gateway: GatewayProcess, token: str) -> None:
    """Open the console, paste `token`, connect, and wait until connected."""
    chrome.open(gateway.http_url + "/console")
    await chrome.until(lambda: chrome.find("body[data-ready]"), "the console to load")
    chrome.type("#token", token)
    chrome.click("#connect")
    await chrome.until(lambda: chrome.text("#state") == "connected", "the console to connect")


async def subscribe_in_console(chrome: Browser, channel: str) -> None:
    chrome.type("#subscribe-channel", channel)
    chrome.click("#subscribe")
    await chrome.until(
        lambda: chrome.find(f'#subscriptions li[data-channel="{channel}"][data-subscribed]'),
        f"the subscription to {channel}",
    )


def shown_messages(chrome: Browser, channel: str) -> list[tuple[int, object]]:
    """(seq, payload) of the rows the console shows for `channel`, oldest first."""
    rows = chrome.script(
        "return [...document.querySelectorAll('#messages tbody tr')]"
        ".filter(r => r.dataset.channel === arguments[0])"
        ".map(r => [Number(r.dataset.seq), r.dataset.payload]).reverse()",
        channel,
    )
    return [(seq, json.loads(payload)) for seq, payload in rows]


async def test_console_authenticates_with_a_pasted_token_and_shows_messages_published_from_python(
    chrome: Browser, gateway_process: Callable[..., GatewayProcess], token
):
    gateway = await gateway_process("page", console=True).start()
    await open_console(chrome, gateway, token(user="browser"))
    assert chrome.text("#user") == "browser"
    channel = "conversation:hello"
    await subscribe_in_console(chrome, channel)

    async with Client(gateway.ws_url, token(user="python")) as python:
        from_python = await python.publish(channel, {"text": "hello from Python"})
        await chrome.until(
            lambda: (
                shown_messages(chrome, channel)
                == [(from_python.seq, {"text": "hello from Python"})]
            ),
            "the message published from Python",
        )

        subscription = await python.subscribe(channel, since=from_python.seq)
        chrome.type("#publish-channel", channel)
        chrome.type("#publish-payload", '{"text": "hello from the browser"}')
        chrome.click("#publish")
        received = await subscription.get(timeout=30)
        assert received.payload == {"text": "hello from the browser"}
        await chrome.until(
            lambda: f"as seq {received.seq}" in chrome.text("#publish-result"),
            "the publish acknowledgement with its seq",
        )
    await chrome.until(
        lambda: (
            [seq for seq, _ in shown_messages(chrome, channel)] == [from_python.seq, received.seq]
        ),
        "both messages, each once",
    )
    chrome.screenshot("console")


async def test_console_resumes_without_losing_messages_when_its_gateway_is_killed_and_restarted(
    chrome: Browser, gateway_process: Callable[..., GatewayProcess], token
):
    page_gateway = await gateway_process("page", console=True).start()
    backend = await gateway_process("backend").start()
    await open_console(chrome, page_gateway, token(user="browser"))
    channel = "agent:resume"
    await subscribe_in_console(chrome, channel)

    async with Client(backend.ws_url, token(user="python")) as python:
        published = [(await python.publish(channel, {"n": 1})).seq]
        await chrome.until(lambda: len(shown_messages(chrome, channel)) == 1, "the first message")

        page_gateway.kill()
        await chrome.until(
            lambda: chrome.text("#state") == "reconnecting", "the page to notice the loss"
        )
        for n in (2, 3):
            published.append((await python.publish(channel, {"n": n})).seq)
        await page_gateway.start()  # the same port
        await chrome.until(lambda: chrome.text("#reconnects") == "1", "the page to reconnect")
        published.append((await python.publish(channel, {"n": 4})).seq)

        expected = list(zip(published, [{"n": n} for n in (1, 2, 3, 4)], strict=True))
        await chrome.until(
            lambda: shown_messages(chrome, channel) == expected,
            "every message once, in order, after the restart",
        )
    assert chrome.text("#state") == "connected"
    assert chrome.find('#events li[data-kind="reconnect"]')
    chrome.screenshot("console-resumed")


async def test_console_shows_the_gateways_counters(
    chrome: Browser, gateway_process: Callable[..., GatewayProcess], token
):
    gateway = await gateway_process("page", console=True).start()
    await open_console(chrome, gateway, token(user="browser"))
    await chrome.until(
        lambda: int(chrome.text("#stat-connections")) >= 1, "the connection count to show"
    )
    async with Client(gateway.ws_url, token(user="python")) as python:
        for n in range(5):
            await python.publish("metrics:cpu", n)
    await chrome.until(
        lambda: int(chrome.find("#stats-panel").get_attribute("data-messages-in")) >= 5,
        "the published messages to be counted",
    )
    assert chrome.find('#namespace-rates tr[data-namespace="metrics"]')


async def test_page_from_a_foreign_origin_is_refused_by_the_gateway(
    chrome: Browser,
    gateway_process: Callable[..., GatewayProcess],
    foreign_site: ForeignSite,
    token,
):
    gateway = gateway_process("page", console=True, allowed_origins=["https://app.example.com"])
    await gateway.start()
    foreign_site.pages["/"] = f"""<!doctype html>
<title>foreign</title>
<script type="module">
  import {{ connect }} from "{gateway.http_url}/client/neurelay.js";
  try {{
    await connect("ws://127.0.0.1:{gateway.port}/ws", {{ token: {json.dumps(token())} }});
    document.body.dataset.result = "connected";
  }} catch (error) {{
    document.body.dataset.result = error.code;
  }}
</script>"""
    chrome.open(foreign_site.origin + "/")
    result = await chrome.until(
        lambda: chrome.find("body").get_attribute("data-result"), "the connection attempt"
    )
    # The module itself loaded (it is public); the WebSocket upgrade was refused.
    assert result == "connection_lost"
    async with (
        aiohttp.ClientSession() as http,
        http.get(gateway.http_url + "/console/stats") as response,
    ):
        stats = await response.json()
    assert stats["rejections"].get("forbidden") == 1
    assert stats["connections"] == 0


async def test_console_under_neurelay_dev_connects_with_the_dev_token_by_itself(
    chrome: Browser, neurelay_dev: Callable[[], DevProcess]
):
    dev = neurelay_dev()
    chrome.open(dev.http_url + "/console")
    await chrome.until(
        lambda: chrome.text("#state") == "connected", "the console to connect on its own"
    )
    assert chrome.text("#user") == "dev"
    await subscribe_in_console(chrome, "system")


async def test_console_shows_who_is_in_a_subscribed_channel_live(
    chrome: Browser, gateway_process: Callable[..., GatewayProcess], token
):
    namespaces = {"conversation": {"history_messages": 10, "presence": True, "join_leave": True}}
    gateway = await gateway_process("page", console=True, namespaces=namespaces).start()
    await open_console(chrome, gateway, token(user="browser", info={"name": "Browser"}))
    channel = "conversation:together"
    await subscribe_in_console(chrome, channel)
    shown = f'#subscriptions li[data-channel="{channel}"] .presence'
    await chrome.until(lambda: chrome.text(shown) == "here: Browser", "the console itself")

    async with Client(gateway.ws_url, token(user="ada", info={"name": "Ada"})) as python:
        await python.subscribe(channel)
        await chrome.until(lambda: chrome.text(shown) == "here: Ada, Browser", "Ada's join")
        await python.unsubscribe(channel)
        await chrome.until(lambda: chrome.text(shown) == "here: Browser", "Ada's leave")
    chrome.screenshot("console-presence")
