"""Client scenarios with counted results, shared by the local e2e tests and the kind scripts.

Each scenario connects subscribers and publishers through one URL (an
ingress), publishes with retries until every message is acknowledged,
optionally disturbs the platform meanwhile (a callback: kill a gateway, stop
a NATS node, drain a replica), then checks every subscriber against the
acknowledgements: every acknowledged message of its channel delivered once,
in `seq` order. `Tally` holds the counts for the results table.

    python -m e2e.scenarios --url ws://HOST/ws --secret S [--subscribers N] ...
runs the undisturbed scenario and the connection-limit check against any
deployment (the kind scripts use it; they disturb the cluster themselves
with --during "kubectl ...").
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import re
import shlex
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable

from neurelay.auth import mint_token
from neurelay.client import Client, Subscription
from neurelay.errors import ServerError

Disturbance = Callable[[], Awaitable[None]]
RETRYABLE = frozenset({"unavailable", "internal", "rate_limited"})


@dataclasses.dataclass
class Tally:
    scenario: str
    clients: int = 0
    sent: int = 0
    acknowledged: int = 0
    expected: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    reconnects: int = 0
    seconds: float = 0.0
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.out_of_order == 0 and self.delivered == self.expected


def table(tallies: list[Tally]) -> str:
    header = (
        "| scenario | clients | sent | acknowledged | deliveries expected | delivered "
        "| lost | duplicates dropped | out of order | reconnects | seconds | note |"
    )
    rows = [header, "|" + "---|" * 12]
    for t in tallies:
        rows.append(
            f"| {t.scenario} | {t.clients} | {t.sent} | {t.acknowledged} | {t.expected} "
            f"| {t.delivered} | {t.lost} | {t.duplicated} | {t.out_of_order} | {t.reconnects} "
            f"| {t.seconds:.1f} | {t.note} |"
        )
    return "\n".join(rows)


async def _connect_all(url: str, tokens: list[str], opened: list[Client]) -> list[Client]:
    """Connect in batches of 50; every client that connects is also added to `opened`."""
    clients: list[Client] = []
    for start in range(0, len(tokens), 50):
        batch = [
            Client(url, t, backoff_initial=0.05, backoff_max=1.0)
            for t in tokens[start : start + 50]
        ]
        results = await asyncio.gather(*(c.connect() for c in batch), return_exceptions=True)
        connected = [c for c, r in zip(batch, results, strict=True) if r is None]
        opened.extend(connected)
        clients.extend(connected)
        failures = [r for r in results if r is not None]
        if failures:
            raise failures[0]
    return clients


async def traffic(
    name: str,
    url: str,
    secret: str,
    *,
    subscribers: int,
    channels: int,
    publishers: int,
    messages_per_publisher: int,
    rate_per_publisher: float = 50.0,
    disturbance: Disturbance | None = None,
    settle_seconds: float = 90.0,
    run_id: str | None = None,
) -> Tally:
    started = time.monotonic()
    run = run_id or f"{int(time.time() * 1000) % 10**9}"
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:40]
    channel_of = [f"conversation:{slug}-{run}-{i % channels}" for i in range(subscribers)]
    sub_tokens = [
        mint_token(secret, f"sub-{run}-{i}", channels=[channel_of[i]]) for i in range(subscribers)
    ]
    pub_tokens = [
        mint_token(secret, f"pub-{run}-{j}", publish=["conversation:*"]) for j in range(publishers)
    ]
    tally = Tally(name, clients=subscribers + publishers)
    clients: list[Client] = []
    consumers: list[asyncio.Task[None]] = []
    try:
        subscriber_clients = await _connect_all(url, sub_tokens, clients)
        publisher_clients = await _connect_all(url, pub_tokens, clients)
        subscriptions: list[Subscription] = [
            await client.subscribe(channel_of[i]) for i, client in enumerate(subscriber_clients)
        ]
        received: list[list[int]] = [[] for _ in subscriptions]

        async def consume(index: int) -> None:
            async for message in subscriptions[index]:
                received[index].append(message.seq)

        consumers = [asyncio.create_task(consume(i)) for i in range(len(subscriptions))]
        acked: defaultdict[str, list[int]] = defaultdict(list)
        total = publishers * messages_per_publisher
        disturb_now = asyncio.Event()

        async def publish(j: int, client: Client) -> None:
            for k in range(messages_per_publisher):
                channel = channel_of[(j * messages_per_publisher + k) % subscribers]
                tally.sent += 1
                for attempt in range(200):
                    try:
                        published = await client.publish(
                            channel, {"j": j, "k": k}, id=f"{run}-{j}-{k}"
                        )
                    except ServerError as e:
                        if e.code not in RETRYABLE:
                            raise
                        await asyncio.sleep(min(1.0, 0.05 * (attempt + 1)))
                        continue
                    acked[channel].append(published.seq)
                    if sum(map(len, acked.values())) >= total * 0.3:
                        disturb_now.set()
                    break
                await asyncio.sleep(1.0 / rate_per_publisher)

        async def disturb() -> None:
            assert disturbance is not None
            await disturb_now.wait()
            await disturbance()

        jobs = [publish(j, c) for j, c in enumerate(publisher_clients)]
        if disturbance is not None:
            jobs.append(disturb())
        await asyncio.gather(*jobs)
        tally.acknowledged = sum(len(s) for s in acked.values())

        deadline = time.monotonic() + settle_seconds
        while time.monotonic() < deadline:
            if all(set(acked[channel_of[i]]) <= set(received[i]) for i in range(subscribers)):
                break
            await asyncio.sleep(0.2)
        for i in range(subscribers):
            expected = acked[channel_of[i]]
            got = received[i]
            tally.expected += len(expected)
            tally.delivered += len(set(expected) & set(got))
            tally.duplicated += subscriptions[i].duplicates + (len(got) - len(set(got)))
            tally.out_of_order += sum(1 for a, b in itertools.pairwise(got) if b <= a)
        tally.lost = tally.expected - tally.delivered
        tally.reconnects = sum(c.reconnects for c in clients)
    finally:
        for task in consumers:
            task.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    tally.seconds = time.monotonic() - started
    return tally


async def connection_limit(url: str, secret: str, limit: int, run_id: str | None = None) -> Tally:
    """Open `limit` connections for one user through the ingress, then one more."""
    started = time.monotonic()
    user = f"limited-{run_id or int(time.time())}"
    token = mint_token(secret, user)
    tally = Tally("connection limit per user", clients=limit + 1, sent=limit + 1)
    clients = []
    for _ in range(limit):
        client = Client(url, token, reconnect=False)
        await client.connect()
        clients.append(client)
    extra = Client(url, token, reconnect=False)
    try:
        await extra.connect()
        clients.append(extra)
        tally.note = "the extra connection was accepted"
    except ServerError as e:
        tally.note = f"connection {limit + 1} refused: {e.code}"
    tally.acknowledged = len(clients)
    tally.expected = tally.delivered = limit
    tally.lost = len(clients) - limit
    await asyncio.gather(*(c.close() for c in clients))
    tally.seconds = time.monotonic() - started
    return tally


def _shell(command: str) -> Disturbance:
    async def run() -> None:
        process = await asyncio.create_subprocess_exec(*shlex.split(command))
        await process.wait()

    return run


async def _main(args: argparse.Namespace) -> int:
    disturbance = _shell(args.during) if args.during else None
    tallies = [
        await traffic(
            args.name,
            args.url,
            args.secret,
            subscribers=args.subscribers,
            channels=args.channels,
            publishers=args.publishers,
            messages_per_publisher=args.messages,
            disturbance=disturbance,
        ),
        await connection_limit(args.url, args.secret, args.limit),
    ]
    print(table(tallies))
    return 0 if all(t.ok for t in tallies) else 1


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.scenarios", description=__doc__)
    parser.add_argument("--url", required=True, help="the gateway WebSocket URL via the ingress")
    parser.add_argument("--secret", required=True, help="HS256 secret the gateways verify with")
    parser.add_argument("--name", default="traffic")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=50)
    parser.add_argument("--publishers", type=int, default=10)
    parser.add_argument("--messages", type=int, default=30, help="messages per publisher")
    parser.add_argument("--limit", type=int, default=5, help="connections allowed per user")
    parser.add_argument("--during", help="shell command run once 30%% of messages are acknowledged")
    return asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
