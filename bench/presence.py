"""python -m bench.presence: presence and join/leave across three gateways on one NATS.

Two measurements, saved to bench/results/latest-presence-<size>.json and
shown in docs/performance.md ("Presence across three gateways", `section`):

- `presence` and `presence_stats` round trips on one channel whose members
  are spread over three gateway processes (the full list: `max_clients` is
  set above the member count, so nothing is cut);
- a join/leave storm: `--storm` clients subscribe within `--storm-seconds` to
  one channel of a namespace with join/leave on, while a steady publisher
  sends timestamped messages on a channel of another namespace; the delivery
  latency of the steady channel during the storm is compared with before it.

Everything runs on 127.0.0.1 (an embedded nats-server and `neurelay gateway`
child processes); the clients are this Python process, on the same machine,
so the figures include their cost too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

from bench import report
from bench.__main__ import raise_open_files
from neurelay.auth import mint_token
from neurelay.embedded import EmbeddedNats, free_port

SECRET = "bench-presence-secret-" + "p" * 32
CROWD = "conversation:crowd"
STORM = "conversation:storm"
STEADY = "agent:steady"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 0.5) * 1000, 2),
        "p99_ms": round(percentile(values, 0.99) * 1000, 2),
        "max_ms": round(max(values) * 1000, 2),
        "mean_ms": round(statistics.fmean(values) * 1000, 2),
    }


class Gateways:
    """Three `neurelay gateway` processes on one NATS."""

    def __init__(self, directory: Path, nats_url: str, max_clients: int) -> None:
        self.directory = directory
        self.ports = [free_port() for _ in range(3)]
        self.config = {
            "nats": {"servers": [nats_url], "subject_prefix": "benchpresence"},
            "auth": {"secret": SECRET},
            "limits": {"messages_per_second": 10_000, "connections_per_user": 10},
            "namespaces": {
                "conversation": {"history_messages": 0, "presence": True, "join_leave": True},
                "agent": {"history_messages": 0},
            },
            "presence": {"max_clients": max_clients},
            "log_level": "WARNING",
        }
        self.processes: list[subprocess.Popen[bytes]] = []

    def urls(self) -> list[str]:
        return [f"ws://127.0.0.1:{port}/ws" for port in self.ports]

    def spawn(self) -> None:
        for n, port in enumerate(self.ports):
            config = {**self.config, "server": {"host": "127.0.0.1", "port": port}}
            path = self.directory / f"gateway-{n}.yaml"
            path.write_text(yaml.safe_dump(config), encoding="utf-8")
            with open(self.directory / f"gateway-{n}.log", "wb") as log:
                self.processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "neurelay.cli", "gateway", "--config", str(path)],
                        stdout=log,
                        stderr=log,
                    )
                )

    async def __aenter__(self) -> Gateways:
        self.spawn()
        async with aiohttp.ClientSession() as http:
            for port in self.ports:
                for _ in range(300):
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                            if response.status == 200:
                                break
                    await asyncio.sleep(0.1)
                else:
                    raise RuntimeError(f"gateway on {port} did not become ready")
        await asyncio.sleep(0.5)  # the replicas' first announcements
        return self

    async def __aexit__(self, *exc: object) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


class Member:
    """One connection subscribed to one channel, reading everything it is sent."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames = 0
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for _ in self.ws:
            self.frames += 1

    async def close(self) -> None:
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader
        await self.ws.close()


async def join(http: aiohttp.ClientSession, url: str, user: str, channel: str) -> Member:
    token = mint_token(SECRET, user, channels=["*"], publish=["*"], info={"name": user})
    ws = await http.ws_connect(f"{url}?token={token}", max_msg_size=0)
    await ws.receive_json()  # authenticated
    await ws.send_json({"type": "subscribe", "channel": channel, "id": 1})
    while (await ws.receive_json()).get("type") != "subscribed":
        pass
    return Member(ws)


async def crowd(
    http: aiohttp.ClientSession, urls: list[str], count: int, channel: str, prefix: str
) -> list[Member]:
    limit = asyncio.Semaphore(64)

    async def one(n: int) -> Member:
        async with limit:
            return await join(http, urls[n % len(urls)], f"{prefix}{n}", channel)

    return list(await asyncio.gather(*(one(n) for n in range(count))))


async def ask(
    ws: aiohttp.ClientWebSocketResponse, kind: str, channel: str, n: int | str
) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    await ws.send_json({"type": kind, "channel": channel, "id": n})
    while True:
        reply: dict[str, Any] = await ws.receive_json()
        if reply.get("id") == n:
            return time.perf_counter() - started, reply


async def measure_presence(
    http: aiohttp.ClientSession, urls: list[str], members: int, queries: int
) -> dict[str, Any]:
    crowd_members = await crowd(http, urls, members, CROWD, "m")
    token = mint_token(SECRET, "asker", channels=["*"])
    results: dict[str, Any] = {"members": members}
    try:
        async with http.ws_connect(f"{urls[0]}?token={token}", max_msg_size=0) as asker:
            await asker.receive_json()
            for kind in ("presence", "presence_stats"):
                await ask(asker, kind, CROWD, "warm-up")  # not timed: the first warms the path
                times, last = [], {}
                for n in range(queries):
                    elapsed, last = await ask(asker, kind, CROWD, n)
                    times.append(elapsed)
                results[kind] = summary(times)
                if kind == "presence":
                    results["listed"] = len(last.get("clients", ()))
                    results["truncated"] = bool(last.get("truncated"))
                else:
                    results["stats"] = {"users": last["users"], "connections": last["connections"]}
    finally:
        await asyncio.gather(*(m.close() for m in crowd_members))
    return results


async def steady_latencies(
    http: aiohttp.ClientSession, urls: list[str], seconds: float, rate: float
) -> list[float]:
    """Delivery latency of a steady stream on a channel without join/leave."""
    subscriber_token = mint_token(SECRET, "steady-sub", channels=["*"])
    publisher_token = mint_token(SECRET, "steady-pub", publish=["*"])
    latencies: list[float] = []
    async with (
        http.ws_connect(f"{urls[1]}?token={subscriber_token}") as subscriber,
        http.ws_connect(f"{urls[2]}?token={publisher_token}") as publisher,
    ):
        await subscriber.receive_json()
        await publisher.receive_json()
        await subscriber.send_json({"type": "subscribe", "channel": STEADY})
        await subscriber.receive_json()

        async def read() -> None:
            async for message in subscriber:
                frame = orjson.loads(message.data)
                if frame.get("type") == "message":
                    latencies.append(time.time() - frame["payload"]["t"])

        async def drain() -> None:
            async for _ in publisher:
                pass

        reader, drainer = asyncio.create_task(read()), asyncio.create_task(drain())
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await publisher.send_json(
                {"type": "publish", "channel": STEADY, "payload": {"t": time.time()}}
            )
            await asyncio.sleep(1 / rate)
        await asyncio.sleep(0.5)
        for task in (reader, drainer):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return latencies


async def measure_storm(
    http: aiohttp.ClientSession,
    urls: list[str],
    storm: int,
    storm_seconds: float,
    rate: float,
    channels: int,
) -> dict[str, Any]:
    baseline = await steady_latencies(http, urls, storm_seconds, rate)
    stormers: list[Member] = []
    arrival: list[float] = []

    async def arrive() -> None:
        began = time.monotonic()
        limit = asyncio.Semaphore(64)
        spacing = storm_seconds / storm

        async def one(n: int) -> None:
            await asyncio.sleep(n * spacing)
            async with limit:
                channel = f"{STORM}-{n % channels}"
                stormers.append(await join(http, urls[n % len(urls)], f"s{n}", channel))

        await asyncio.gather(*(one(n) for n in range(storm)))
        arrival.append(time.monotonic() - began)

    during, _ = await asyncio.gather(
        steady_latencies(http, urls, storm_seconds + 2, rate), arrive()
    )
    await asyncio.sleep(1.0)
    notices = sum(m.frames for m in stormers)
    await asyncio.gather(*(m.close() for m in stormers))
    base, load = summary(baseline), summary(during)
    return {
        "storm_clients": storm,
        "storm_channels": channels,
        "storm_seconds": storm_seconds,
        "arrived_in_s": round(arrival[0], 2),
        "join_frames_delivered": notices,
        "steady_rate_per_s": rate,
        "baseline": base,
        "during_storm": load,
        "p50_ratio": round(load["p50_ms"] / max(base["p50_ms"], 0.001), 2),
        "p99_ratio": round(load["p99_ms"] / max(base["p99_ms"], 0.001), 2),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-presence-") as tmp, EmbeddedNats() as nats:
        async with Gateways(Path(tmp), nats.url, args.members + 100) as gateways:
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as http:
                urls = gateways.urls()
                presence = await measure_presence(http, urls, args.members, args.queries)
                storms = [
                    await measure_storm(
                        http, urls, args.storm, args.storm_seconds, args.steady_rate, int(k)
                    )
                    for k in args.storm_channels.split(",")
                ]
    return {"gateways": 3, "presence": presence, "storms": storms}


SECTION = """
## Presence across three gateways

_Run {started}: `python -m bench.presence --members {members} --storm {storm}`; three gateway
processes and one NATS, the clients in one Python process on the same (shared, two-core)
machine, so the figures include the clients' own cost._

| measure | p50 | p99 | max |
|---|---|---|---|
{rows}
{storms}
A `presence` answer is one request on core NATS answered by every replica, so its cost grows
with the entries listed (each encoded by its replica, then by the asking one); `presence_stats`
ships 8-byte user digests instead. Centrifugo's published presence figures are for its Redis
and Tarantool engines on other hardware and are not comparable number for number.
"""

STORM_TEXT = """\
Storm over {storm_channels:,} channel(s): {storm_clients:,} clients subscribed within
{arrived_in_s} s (target {storm_seconds:g} s) in a namespace with join/leave on, each arrival
sending a `join` to everyone already in its channel ({join_frames_delivered:,} `join` frames
delivered); delivery on a channel of another namespace ({steady_rate_per_s:g} messages/s,
publisher and subscriber on two of the gateways) took {p50_ratio} times as long at p50 and
{p99_ratio} times at p99 as before the storm.
"""


def _row(label: str, figures: dict[str, float]) -> str:
    cells = " | ".join(f"{figures[key]} ms" for key in ("p50_ms", "p99_ms", "max_ms"))
    return f"| {label} | {cells} |\n"


def section(size: str) -> str:
    path = report.RESULTS / f"latest-presence-{size}.json"
    if not path.exists():
        return ""
    result = json.loads(path.read_text())
    presence, storms = result["presence"], result["storms"]
    members, listed = presence["members"], presence["listed"]
    rows = [
        _row(
            f"`presence`, {members:,} members on 3 gateways, full list of {listed:,}",
            presence["presence"],
        ),
        _row("`presence_stats`, same channel", presence["presence_stats"]),
    ]
    for storm in storms:
        where = f"{storm['storm_channels']:,} channel(s)"
        rows.append(_row(f"other channel, before the storm over {where}", storm["baseline"]))
        rows.append(_row(f"other channel, during the storm over {where}", storm["during_storm"]))
    return SECTION.format(
        started=result["started"],
        members=members,
        storm=storms[0]["storm_clients"] if storms else 0,
        rows="".join(rows),
        storms="\n".join(STORM_TEXT.format(**storm) for storm in storms),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.presence")
    parser.add_argument("--members", type=int, default=3000, help="connections in the channel")
    parser.add_argument("--queries", type=int, default=50, help="presence requests timed")
    parser.add_argument("--storm", type=int, default=1000, help="clients subscribing at once")
    parser.add_argument("--storm-seconds", type=float, default=10.0)
    parser.add_argument(
        "--storm-channels",
        default="1,100",
        help="comma-separated: one storm per value, its clients spread over that many channels",
    )
    parser.add_argument("--steady-rate", type=float, default=50.0, help="messages per second")
    parser.add_argument("--size", default="full", help="results label (tiny for the smoke test)")
    parser.add_argument("--results", type=Path, help="directory for results (bench/results)")
    args = parser.parse_args(argv)
    if args.results is not None:
        report.RESULTS = args.results
    raise_open_files()
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    results = {"started": started, "size": args.size, **asyncio.run(run(args))}
    report.RESULTS.mkdir(exist_ok=True)
    path = report.RESULTS / f"latest-presence-{args.size}.json"
    path.write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
