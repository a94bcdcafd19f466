"""End-to-end: clients through nginx to three gateways on a 3-node NATS cluster, with failures.

Each scenario prints its counts; every one must lose nothing acknowledged.
The results table is also written to artifacts/e2e-results.md.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from e2e.dataplane import PRESENCE_TTL_SECONDS, DataPlane, rendered_config
from e2e.ingress import nginx_binary
from e2e.presence import presence_across_replicas
from e2e.scenarios import Tally, connection_limit, table, traffic
from tests.conftest import SECRET

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
# Sizes: the 1,000 clients for the steady scenario; smaller crowds for the failures.
STEADY = {"subscribers": 1000, "channels": 50, "publishers": 10, "messages_per_publisher": 20}
UNDER_LOAD = {"subscribers": 150, "channels": 15, "publishers": 6, "messages_per_publisher": 40}


@pytest.fixture(scope="module")
def plane(tmp_path_factory: Any) -> Any:
    try:
        nginx_binary()
    except RuntimeError as e:
        pytest.skip(str(e))
    secret_file = tmp_path_factory.mktemp("secret") / "jwt"
    secret_file.write_text(SECRET)
    plane = DataPlane(rendered_config(secret_file))
    asyncio.run(plane.start())
    yield plane
    plane.stop()


@pytest.fixture(scope="module")
def results() -> Any:
    (ARTIFACTS / "e2e-results.md").unlink(missing_ok=True)
    tallies: list[Tally] = []
    yield tallies
    ARTIFACTS.mkdir(exist_ok=True)  # printed by e2e/conftest.py at the end of the run
    text = table(tallies)
    (ARTIFACTS / "e2e-results.md").write_text(text + "\n")
    print("\n" + text)


async def _run(results: list[Tally], tally: Tally) -> Tally:
    results.append(tally)
    print(table([tally]))
    return tally


async def test_1000_clients_receive_every_acknowledged_message_once_in_order(plane, results):
    tally = await _run(
        results, await traffic("1000 clients", plane.ingress.ws_url, SECRET, **STEADY)
    )
    assert tally.ok, tally


async def test_gateway_killed_under_load_loses_nothing(plane, results):
    victim = plane.gateways[1]

    async def kill() -> None:
        victim.kill()

    tally = await _run(
        results,
        await traffic(
            "kill -9 a gateway", plane.ingress.ws_url, SECRET, disturbance=kill, **UNDER_LOAD
        ),
    )
    await victim.start()
    assert tally.ok, tally
    assert tally.reconnects > 0, "the disturbance reached no client"


async def test_nats_node_killed_and_restarted_under_load_loses_nothing(plane, results):
    node = plane.nats[2]

    async def bounce() -> None:
        node.kill()
        await asyncio.sleep(3.0)
        node.start()

    tally = await _run(
        results,
        await traffic(
            "kill a NATS node", plane.ingress.ws_url, SECRET, disturbance=bounce, **UNDER_LOAD
        ),
    )
    assert tally.ok, tally


async def test_gateway_drained_by_sigterm_moves_clients_and_loses_nothing(plane, results):
    victim = plane.gateways[0]

    async def drain() -> None:
        victim.signal(signal.SIGTERM)

    tally = await _run(
        results,
        await traffic(
            "SIGTERM a gateway", plane.ingress.ws_url, SECRET, disturbance=drain, **UNDER_LOAD
        ),
    )
    assert await victim.wait_exit(30) == 0
    await victim.start()
    assert tally.ok, tally
    assert tally.reconnects > 0, "the disturbance reached no client"


async def test_connection_limit_holds_across_gateways_behind_the_ingress(plane, results):
    tally = await _run(
        results,
        await connection_limit(plane.ingress.ws_url, SECRET, limit=5, run_id=str(os.getpid())),
    )
    assert tally.lost == 0, tally
    assert "too_many_connections" in tally.note


async def test_presence_join_leave_and_server_api_agree_across_the_three_gateways(plane, results):
    async def kill(index: int) -> None:
        plane.gateways[index].kill()

    tally = await _run(
        results,
        await presence_across_replicas(
            [g.ws_url for g in plane.gateways],
            SECRET,
            PRESENCE_TTL_SECONDS,
            kill,
            str(os.getpid()),
        ),
    )
    await plane.gateways[-1].start()
    assert tally.ok, tally
