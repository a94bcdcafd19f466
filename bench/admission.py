"""python -m bench.admission: key-value writes of the per-user limit at idle.

Holds N idle authenticated connections (one user each, the load generator's
`idle` mode) on each system in turn, and meanwhile samples, once a second,
the gateway's `neurelay_connections` gauge and the last sequence of the
connection table's key-value stream (every write, heartbeat or entry, adds
one). Reported: the writes per second while all N connections are open and
nothing happens, and the gateway's and NATS's CPU over that hold. Results go
to bench/results/latest-admission-<size>.json; `python -m bench docs` puts
the table into docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors

from bench import report
from bench.__main__ import raise_open_files
from bench.driver import Progress, build_loadgen, run_loadgen
from bench.systems import NATS_TOKEN, SECRET, Neurelay, make_system

# The connection table's stream, as each tree names its bucket (prefix `bench`).
STREAMS = ("KV_bench_admission", "KV_bench_connections")
BEFORE = "neurelay@git:b2ee089"


async def _kv_last_seq(js: Any) -> int | None:
    for stream in STREAMS:
        try:
            return int((await js.stream_info(stream)).state.last_seq)
        except nats.js.errors.NotFoundError:
            continue
    return None


def _gauge(metrics_url: str) -> int:
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("neurelay_connections"):
                return int(float(line.split()[-1]))
    return 0


async def _sample(system: Neurelay, samples: list[tuple[float, int, int]], stop: Any) -> None:
    nc = await nats.connect(system.nats_url)
    js = nc.jetstream()
    metrics_url = system.url.replace("ws://", "http://").removesuffix("/ws") + "/metrics"
    try:
        while not stop.is_set():
            try:
                seq = await _kv_last_seq(js)
                open_now = await asyncio.to_thread(_gauge, metrics_url)
            except (OSError, nats.errors.Error) as e:  # a busy gateway may answer late: skip
                print(f"sample skipped: {e!r}", file=sys.stderr)
                continue
            finally:
                await asyncio.sleep(1.0)
            if seq is not None:
                samples.append((time.monotonic(), open_now, seq))
    finally:
        await nc.close()


def steady_rate(samples: list[tuple[float, int, int]], connections: int) -> dict[str, Any]:
    """Writes per second between the first and last sample with all connections open."""
    full = [s for s in samples if s[1] >= connections]
    if len(full) < 2:
        return {"writes_per_s": None, "seconds": 0.0, "writes": 0}
    (t0, _, seq0), (t1, _, seq1) = full[0], full[-1]
    return {
        "writes_per_s": round((seq1 - seq0) / (t1 - t0), 3),
        "seconds": round(t1 - t0, 1),
        "writes": seq1 - seq0,
    }


async def measure(spec: str, connections: int, hold: float, progress: Progress) -> dict[str, Any]:
    binary = build_loadgen()
    system = make_system(spec, None, binary)
    assert isinstance(system, Neurelay)
    samples: list[tuple[float, int, int]] = []
    stop = asyncio.Event()
    with system:
        sampler = asyncio.create_task(_sample(system, samples, stop))
        config = {
            "mode": "idle",
            "subscribers": connections,
            "batch": connections,
            "settle_seconds": 1,
            "hold_seconds": hold,
            "connect_concurrency": 64,
            "protocol": system.protocol,
            "url": system.url,
            "pids": system.pids,
            "secret": SECRET,
            "nats_token": NATS_TOKEN,
            "payload_bytes": 64,
            "time_limit_seconds": 600,
        }
        label = f"admission {connections} {spec}"
        try:
            events = await asyncio.to_thread(run_loadgen, binary, config, None, label, progress)
        finally:
            stop.set()
            await sampler
    hold_event = next(e for e in events if e["event"] == "idle_hold")
    servers = hold_event["proc"]["servers"]
    return {
        "system": spec,
        "connections": hold_event["connections"],
        **steady_rate(samples, hold_event["connections"]),
        "cpu": {name: round(v["cpu"], 3) for name, v in servers.items()},
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        "| system | idle connections | KV writes/s at idle | over | gateway CPU | NATS CPU |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for run in result["runs"]:
        rate = run["writes_per_s"]
        lines.append(
            f"| {run['system']} | {run['connections']:,} | "
            f"{'-' if rate is None else f'{rate:.2f}'} | {run['seconds']} s | "
            f"{run['cpu'].get('gateway', 0):.3f} | {run['cpu'].get('nats', 0):.3f} |"
        )
    return "\n".join(lines) + "\n"


SECTION = """
## Per-user limit at idle

_Run {started}: `python -m bench.admission --connections {connections}` ({size})._
Idle authenticated connections, one user each, held open; the write rate is
the growth of the connection table's key-value stream (its last sequence)
while all of them were open, the CPU (cores) is over the load generator's hold.
`{before}` is the tree before the change: one compare-and-set per user every
`connection_lease_seconds / 3` (10 s), one after another, so with many users it falls
behind the rate its design asks for (users / 10 s). Now the table is written on connect and
close only, plus one heartbeat per replica every 10 s, whatever the number of
connections.

{table}"""


def section(size: str) -> str:
    path = report.RESULTS / f"latest-admission-{size}.json"
    if not path.exists():
        return ""
    result = json.loads(path.read_text())
    return SECTION.format(before=BEFORE, table=table(result), **result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.admission")
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--hold", type=float, default=30.0, help="seconds all are held open")
    parser.add_argument("--systems", default=f"{BEFORE},neurelay")
    parser.add_argument("--size", default="full", help="results label (tiny for the smoke test)")
    parser.add_argument("--results", type=Path, help="directory for results (bench/results)")
    args = parser.parse_args(argv)
    if args.results is not None:
        report.RESULTS = args.results
    raise_open_files()
    progress = Progress()
    result: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "connections": args.connections,
        "size": args.size,
        "runs": [],
    }
    for spec in args.systems.split(","):
        result["runs"].append(asyncio.run(measure(spec, args.connections, args.hold, progress)))
    report.RESULTS.mkdir(exist_ok=True)
    (report.RESULTS / f"latest-admission-{args.size}.json").write_text(json.dumps(result, indent=1))
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
