"""python -m bench.replaying: `last` and `since` on a channel of 100,000 retained messages.

Starts one gateway whose `archive` namespace keeps 200,000 messages a
channel, publishes `--retained` messages into one channel straight into
JetStream (`neurelay.publisher`, batches of 1,000), then times, over
`--tries` WebSocket connections each, `subscribe` with `last: 1`, `last: 100`
and `since` set to the 100th newest sequence on that channel, and `last: 1`
on a channel of 100 messages for comparison: from sending the `subscribe`
to receiving the last replayed message. A reply whose cost grew with the
channel's history would show as a gap between the two `last: 1` rows.
Results go to bench/results/latest-replaying-<size>.json; report.py renders
the table.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench import report
from bench.systems import SECRET, Neurelay, namespaces_yaml
from neurelay.auth import mint_token
from neurelay.publisher import Publisher, PublisherSettings

BIG = "archive:big"
SMALL = "archive:small"
SMALL_RETAINED = 100
BATCH = 1000


async def fill(system: Neurelay, channel: str, count: int) -> float:
    """Publish `count` messages into `channel`; returns the seconds it took."""
    settings = PublisherSettings(servers=[system.nats_url], user="svc", subject_prefix="bench")
    started = time.monotonic()
    async with Publisher(settings) as publisher:
        for first in range(0, count, BATCH):
            await publisher.publish_batch(
                (channel, {"n": n, "pad": "x" * 100})
                for n in range(first, min(first + BATCH, count))
            )
    return time.monotonic() - started


async def newest_seq(http: aiohttp.ClientSession, url: str, token: str, channel: str) -> int:
    """The channel's newest sequence, from a `last: 1` replay."""
    async with http.ws_connect(f"{url}?token={token}", protocols=["neurelay.v1.json"]) as ws:
        await ws.send_json({"type": "subscribe", "channel": channel, "last": 1, "id": 1})
        while True:
            frame = json.loads((await ws.receive()).data)
            if frame["type"] == "message":
                return int(frame["seq"])


async def timed_replay(
    http: aiohttp.ClientSession, url: str, token: str, subscribe: dict[str, Any], expect: int
) -> float:
    """Milliseconds from sending `subscribe` to the `expect`-th replayed message."""
    async with http.ws_connect(f"{url}?token={token}", protocols=["neurelay.v1.json"]) as ws:
        started = time.perf_counter()
        await ws.send_json({"type": "subscribe", "id": 1, **subscribe})
        received = 0
        while received < expect:
            frame = json.loads((await ws.receive()).data)
            if frame["type"] == "message":
                received += 1
            elif frame["type"] == "error":
                raise RuntimeError(f"replay refused: {frame}")
        return (time.perf_counter() - started) * 1000


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": round(ordered[-1], 2)}


async def measure(retained: int, tries: int) -> dict[str, Any]:
    system = Neurelay("neurelay", None)
    system.namespaces = namespaces_yaml(archive=200_000)
    with system:
        fill_seconds = await fill(system, BIG, retained)
        await fill(system, SMALL, SMALL_RETAINED)
        token = mint_token(SECRET, "reader", channels=["archive:*"])
        async with aiohttp.ClientSession() as http:
            newest = await newest_seq(http, system.url, token, BIG)
            small_newest = await newest_seq(http, system.url, token, SMALL)
            kinds: list[tuple[str, int, dict[str, Any], int]] = [
                ("`last: 1`", retained, {"channel": BIG, "last": 1}, 1),
                ("`last: 1`", SMALL_RETAINED, {"channel": SMALL, "last": 1}, 1),
                ("`last: 100`", retained, {"channel": BIG, "last": 100}, 100),
                (
                    "`since` the 100th newest",
                    retained,
                    {"channel": BIG, "since": newest - 100},
                    100,
                ),
            ]
            timings: list[list[float]] = [[] for _ in kinds]
            for _ in range(tries):  # interleaved, so a disturbance hits every kind alike
                for k, (_, _, subscribe, expect) in enumerate(kinds):
                    timings[k].append(
                        await timed_replay(http, system.url, token, subscribe, expect)
                    )
    return {
        "retained": retained,
        "newest_seq": newest,
        "small_newest_seq": small_newest,
        "fill_seconds": round(fill_seconds, 2),
        "tries": tries,
        "rows": [
            {"request": label, "retained": kept, "messages": expect, **percentiles(times)}
            for (label, kept, _, expect), times in zip(kinds, timings, strict=True)
        ],
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        "| request | channel's retained messages | messages replayed | p50 | p99 | max |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['request']} | {row['retained']:,} | {row['messages']} | {row['p50_ms']} ms "
            f"| {row['p99_ms']} ms | {row['max_ms']} ms |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replaying")
    parser.add_argument("--retained", type=int, default=100_000, help="messages in the channel")
    parser.add_argument("--tries", type=int, default=200, help="timed subscribes of each kind")
    parser.add_argument("--size", default="full", help="results label (tiny for the smoke test)")
    parser.add_argument("--results", type=Path, help="directory for results (bench/results)")
    args = parser.parse_args(argv)
    if args.results is not None:
        report.RESULTS = args.results
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    result = {
        "started": started,
        "size": args.size,
        **asyncio.run(measure(args.retained, args.tries)),
    }
    report.RESULTS.mkdir(exist_ok=True)
    (report.RESULTS / f"latest-replaying-{args.size}.json").write_text(json.dumps(result, indent=1))
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
