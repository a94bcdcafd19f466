"""The operator's NATS connections: dialled on demand, with credentials, failures mapped."""

from __future__ import annotations

import logging

import pytest

from neurelay.embedded import EmbeddedNats, free_port
from neurelay.errors import BusUnavailable
from neurelay.jetstream.pool import NatsPool

# A user JWT and nkey seed in the .creds layout nats-py reads (this server does not check them).
CREDS = b"""-----BEGIN NATS USER JWT-----
eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.c2ln
------END NATS USER JWT------

-----BEGIN USER NKEY SEED-----
SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU
------END USER NKEY SEED------
"""


@pytest.fixture
async def pool():
    pool = NatsPool(logging.getLogger("test.pool"), connect_timeout=1.0)
    yield pool
    await pool.close()


async def test_a_connection_with_a_credentials_file_reaches_jetstream(
    pool: NatsPool, shared_nats: EmbeddedNats
) -> None:
    # nats-py signs with nkeys: without that package installed, connecting raises ImportError.
    js = await pool.jetstream(shared_nats.url, CREDS)
    assert (await js.account_info()).limits is not None


async def test_connections_are_shared_per_server_and_credentials(
    pool: NatsPool, shared_nats: EmbeddedNats
) -> None:
    first = await pool.jetstream(shared_nats.url, None)
    again = await pool.jetstream(shared_nats.url, None)
    other = await pool.jetstream(shared_nats.url, CREDS)
    assert first._nc is again._nc
    assert other._nc is not first._nc


async def test_an_unreachable_server_is_unavailable(pool: NatsPool) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    with pytest.raises(BusUnavailable, match=url):
        await pool.jetstream(url, None)


def test_credentials_are_remembered_by_where_they_came_from() -> None:
    pool = NatsPool(logging.getLogger("test.pool"))
    assert pool.remembered(("ns", "secret", "key")) is None
    pool.remember(("ns", "secret", "key"), CREDS)
    assert pool.remembered(("ns", "secret", "key")) == CREDS
    assert pool.remembered(("ns", "other", "key")) is None
