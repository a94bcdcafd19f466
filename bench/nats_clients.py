"""nats-py against the next-generation NATS packages on the gateway's hot paths.

Standalone (stdlib and the NATS clients only), because `nats-core` needs
Python 3.13 while Neurelay runs on 3.11: run it in a 3.13 virtualenv holding
nats-py, nats-core and nats-jetstream, against a nats-server with JetStream:

    python3.13 bench/nats_clients.py --url nats://127.0.0.1:4222

Paths, each with the same messages and the client's CPU time measured:
`core-publish` (fire and forget, what fan-out feeds on), `core-receive`
(a subscription callback, the live-following path), `js-publish` (one
JetStream publish awaited at a time, library API) and `js-pipelined`
(publishes written with a reply subject, acks matched by a callback: the
gateway's publish path). Prints one JSON line per (library, path); saved
as bench/results/latest-nats-clients.jsonl, `section()` renders them for
docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

PAYLOAD = b"x" * 128
RESULTS = Path(__file__).resolve().parent / "results" / "latest-nats-clients.jsonl"
# The last run's lines, kept in the repository: `python -m bench all` cannot run this (Python
# 3.13 and nats-core built from source), so the page shows them with their date.
RECORDED = Path(__file__).resolve().parent / "recorded" / "nats-clients-2026-11-30.jsonl"


async def _timed(work: Callable[[], Awaitable[None]], count: int) -> dict[str, float]:
    cpu, wall = time.process_time(), time.monotonic()
    await work()
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    return {"per_s": round(count / wall), "cpu_us_per_msg": round(1e6 * cpu / count, 2)}


async def nats_py(url: str, path: str, count: int, stream_subject: str) -> dict[str, float]:
    import nats

    nc = await nats.connect(url, pending_size=256 * 1024 * 1024)
    try:
        if path == "core-publish":

            async def work() -> None:
                for _ in range(count):
                    await nc.publish("bench.core", PAYLOAD)
                await nc.flush()

        elif path == "core-receive":
            received = 0
            done = asyncio.Event()

            async def on_msg(msg: Any) -> None:
                nonlocal received
                received += 1
                if received == count:
                    done.set()

            await nc.subscribe("bench.recv", cb=on_msg, pending_msgs_limit=-1)
            other = await nats.connect(url, pending_size=256 * 1024 * 1024)
            await nc.flush()

            async def work() -> None:
                for _ in range(count):
                    await other.publish("bench.recv", PAYLOAD)
                await other.flush()
                await done.wait()

        elif path == "js-publish":
            js = nc.jetstream()

            async def work() -> None:
                for _ in range(count):
                    await js.publish(stream_subject, PAYLOAD)

        else:
            acked = 0
            done = asyncio.Event()

            async def on_ack(msg: Any) -> None:
                nonlocal acked
                json.loads(msg.data)
                acked += 1
                if acked == count:
                    done.set()

            await nc.subscribe("_INBOX.pyacks.*", cb=on_ack, pending_msgs_limit=-1)

            async def work() -> None:
                for n in range(count):
                    await nc.publish(stream_subject, PAYLOAD, reply=f"_INBOX.pyacks.{n}")
                await nc.flush()
                await done.wait()

        return await _timed(work, count)
    finally:
        await nc.close()


async def nats_next(url: str, path: str, count: int, stream_subject: str) -> dict[str, float]:
    from nats.client import connect
    from nats.jetstream import new as jetstream

    nc = await connect(url)
    try:
        if path == "core-publish":

            async def work() -> None:
                for _ in range(count):
                    await nc.publish("bench.core", PAYLOAD)
                await nc.flush()

        elif path == "core-receive":
            received = 0
            done = asyncio.Event()

            def on_msg(msg: Any) -> None:
                nonlocal received
                received += 1
                if received == count:
                    done.set()

            sub = await nc.subscribe(
                "bench.recv", max_pending_messages=None, max_pending_bytes=None
            )
            sub.add_callback(on_msg)
            other = await connect(url)
            await nc.flush()

            async def work() -> None:
                for _ in range(count):
                    await other.publish("bench.recv", PAYLOAD)
                await other.flush()
                await done.wait()

        elif path == "js-publish":
            js = jetstream(nc)

            async def work() -> None:
                for _ in range(count):
                    await js.publish(stream_subject, PAYLOAD)

        else:
            acked = 0
            done = asyncio.Event()

            def on_ack(msg: Any) -> None:
                nonlocal acked
                json.loads(msg.data)
                acked += 1
                if acked == count:
                    done.set()

            sub = await nc.subscribe(
                "_INBOX.nextacks.*", max_pending_messages=None, max_pending_bytes=None
            )
            sub.add_callback(on_ack)

            async def work() -> None:
                for n in range(count):
                    await nc.publish(stream_subject, PAYLOAD, reply=f"_INBOX.nextacks.{n}")
                await nc.flush()
                await done.wait()

        return await _timed(work, count)
    finally:
        await nc.close()


async def prepare(url: str) -> None:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    for name in ("BENCH_PY", "BENCH_NEXT"):
        with contextlib.suppress(Exception):  # not there yet
            await js.delete_stream(name)
    await js.add_stream(name="BENCH_PY", subjects=["bench.js.py"], max_msgs=100_000)
    await js.add_stream(name="BENCH_NEXT", subjects=["bench.js.next"], max_msgs=100_000)
    await nc.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--core", type=int, default=200_000)
    parser.add_argument("--js", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    await prepare(args.url)
    lines: list[dict[str, Any]] = []
    started = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())
    for path in ("core-publish", "core-receive", "js-publish", "js-pipelined"):
        count = args.core if path.startswith("core") else args.js
        for _ in range(args.repeat):
            for library, run, subject in (
                ("nats-py", nats_py, "bench.js.py"),
                ("nats-core/nats-jetstream", nats_next, "bench.js.next"),
            ):
                result = await run(args.url, path, count, subject)
                line = {
                    "started": started,
                    "library": library,
                    "path": path,
                    "messages": count,
                    **result,
                }
                print(json.dumps(line), flush=True)
                lines.append(line)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text("".join(json.dumps(line) + "\n" for line in lines))


def section() -> str:
    """The evaluation for docs/performance.md: best of the runs per (library, path), from the
    latest run here or else the recorded one."""
    source = RESULTS if RESULTS.exists() else RECORDED
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for raw in source.read_text().splitlines():
        line = json.loads(raw)
        key = (line["path"], line["library"])
        if key not in best or line["cpu_us_per_msg"] < best[key]["cpu_us_per_msg"]:
            best[key] = line
    rows = [
        f"| {path} | {library} | {line['messages']:,} | {line['per_s']:,} | "
        f"{line['cpu_us_per_msg']} |"
        for (path, library), line in sorted(best.items())
    ]
    header = "| path | library | messages | per second | client CPU µs per message |"
    started = next(iter(best.values())).get("started", "an earlier run")
    return SECTION.format(
        started=started, table="\n".join([header, "|---|---|---:|---:|---:|", *rows])
    )


SECTION = """
## nats-py against nats-core and nats-jetstream

_Run {started}, not part of `python -m bench all`: `bench/nats_clients.py` needs Python 3.13
and nats-core built from source._ Best of two runs per row, one client
process against one nats-server on the same shared two-core machine.
On PyPI `nats-core` is a 0.0.0 placeholder ("package name reserved") and
`nats-jetstream` 0.3.0 imports `nats.client`, which no published package
provides; the rows below use both built from the nats.py repository
(nats-core 0.2.0), which requires Python 3.13 (Neurelay runs on 3.11).

{table}

- The new core client publishes at about half nats-py's CPU per message
  (fire and forget); receiving through a subscription callback, the path
  fan-out feeds on, costs about the same in both.
- nats-jetstream's `publish`, one awaited at a time, costs about twice
  nats-py's CPU per message and is far slower in wall time; pipelined on
  the raw core client (what the gateway now does), both cost about the
  same, and some 15 times less than one awaited publish at a time.
- Not adopted: nats-core is unpublished and needs Python 3.13, and
  nats-jetstream has no key-value store (the per-user limit's table). Where
  the new client wins (core publish, about 1 µs a message) the gain is small
  next to the gateway's ~100 µs per publish. Worth revisiting once
  nats-core is released for the Python Neurelay runs on.
"""


if __name__ == "__main__":
    asyncio.run(main())
