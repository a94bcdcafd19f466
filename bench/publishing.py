"""python -m bench.publishing: publishes per gateway core, and the three ways to publish.

Each system (a gateway tree with its own NATS) takes the same publishes:

- `ws`: WebSocket clients, each keeping `--window` publish frames in flight
  (the next frame goes out as a `published` reply comes back);
- `http`: `POST /api/v1/publish` batches of 100, a few requests at once
  (trees that take a batch);
- `direct`: `neurelay.publisher` batches of 500 straight into JetStream.

Reported per run: publishes per second of wall time, CPU seconds of the
gateway and of NATS (from /proc), publishes per gateway CPU-second (the
"per core" figure) and NATS CPU per 1,000 publishes. The load runs in this
process (aiohttp and the publisher), so on a small machine the wall rate is
bound by it; the per-core figures are not. Results go to
bench/results/latest-publishing-<size>.json; `python -m bench docs` puts the
table into docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench import report
from bench.systems import SECRET, Neurelay, make_system
from neurelay.auth import mint_token
from neurelay.publisher import Publisher, PublisherSettings

BEFORE = "neurelay@git:b2ee089"
# The first tree taking HTTP batches, before the per-connection pipeline (BEFORE takes none).
HTTP_BEFORE = "neurelay@git:f750224"
_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _token(user: str) -> str:
    return mint_token(SECRET, user, channels=["agent:*"], publish=["agent:*"])


async def _ws_client(url: str, index: int, count: int, window: int) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{url}?token={_token(f'p{index}')}", protocols=["neurelay.v1.json"]) as ws,
    ):
        await ws.receive()  # authenticated
        sent = received = 0
        while received < count:
            while sent < count and sent - received < window:
                frame = {"type": "publish", "channel": f"agent:p{index}", "payload": sent}
                await ws.send_str(orjson.dumps(frame | {"id": sent}).decode())
                sent += 1
            reply = orjson.loads((await ws.receive()).data)
            if reply.get("type") != "published":
                raise RuntimeError(f"publish refused: {reply}")
            received += 1


async def _ws(system: Neurelay, total: int, clients: int, window: int) -> None:
    per = total // clients
    await asyncio.gather(*(_ws_client(system.url, i, per, window) for i in range(clients)))


async def _http(system: Neurelay, total: int, clients: int, window: int) -> None:
    url = system.url.replace("ws://", "http://").removesuffix("/ws") + "/api/v1/publish"
    batches = total // 100

    async def worker(index: int, http: aiohttp.ClientSession) -> None:
        for b in range(index, batches, clients):
            # A user per batch: the per-user message rate must not be what is measured (and
            # the gateway tree compared against takes no setting for it).
            headers = {"Authorization": f"Bearer {_token(f'h{index}-{b}')}"}
            channel = f"agent:h{index}"
            body = [{"channel": channel, "payload": n, "id": b * 100 + n} for n in range(100)]
            async with http.post(url, data=orjson.dumps(body), headers=headers) as response:
                answer = await response.json()
                if response.status != 200 or any("code" in r for r in answer["results"]):
                    raise RuntimeError(f"batch refused: {answer}")

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(worker(i, http) for i in range(clients)))


async def _direct(system: Neurelay, total: int, clients: int, window: int) -> None:
    settings = PublisherSettings(servers=[system.nats_url], user="svc", subject_prefix="bench")
    async with Publisher(settings) as publisher:
        for start in range(0, total, 500):
            await publisher.publish_batch([("agent:d", n, None) for n in range(start, start + 500)])


PATHS = {"ws": _ws, "http": _http, "direct": _direct}


async def measure(spec: str, path: str, total: int, clients: int, window: int) -> dict[str, Any]:
    system = make_system(spec, None, Path())
    assert isinstance(system, Neurelay)
    with system:
        gateway, nats = system.pids["gateway"], system.pids["nats"]
        # One small round first: streams and connections warm, imports done.
        await PATHS[path](system, min(total, 200 * clients), clients, window)
        cpu0 = (cpu_seconds(gateway), cpu_seconds(nats), time.process_time())
        t0 = time.monotonic()
        await PATHS[path](system, total, clients, window)
        wall = time.monotonic() - t0
        gateway_cpu = cpu_seconds(gateway) - cpu0[0]
        nats_cpu = cpu_seconds(nats) - cpu0[1]
        load_cpu = time.process_time() - cpu0[2]
    return {
        "system": spec,
        "path": path,
        "publishes": total,
        "per_s": round(total / wall),
        "gateway_cpu": round(gateway_cpu, 2),
        "nats_cpu": round(nats_cpu, 2),
        "load_cpu": round(load_cpu, 2),
        "per_gateway_core": round(total / gateway_cpu) if gateway_cpu > 0.05 else None,
        "nats_cpu_ms_per_1000": round(1000 * nats_cpu / total * 1000, 1),
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        "| system | path | publishes/s | gateway CPU s | publishes per gateway core-second "
        "| NATS CPU ms per 1,000 | load CPU s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for run in result["runs"]:
        per_core = run["per_gateway_core"]
        lines.append(
            f"| {run['system']} | {run['path']} | {run['per_s']:,} | {run['gateway_cpu']} | "
            f"{'-' if per_core is None else f'{per_core:,}'} | {run['nats_cpu_ms_per_1000']} | "
            f"{run['load_cpu']} |"
        )
    return "\n".join(lines) + "\n"


SECTION = """
## Publishing: per gateway core, and WebSocket, HTTP or direct

_Run {started}: `python -m bench.publishing --publishes {publishes}` ({size}), {publishes:,}
publishes per run, {clients} clients, WebSocket window {window}._ `{before}` is the tree
before this work on the publish path: a connection awaited each publish's ack before reading
its next frame (so a client's window went one publish at a time), through nats-py's
`JetStream.publish` (one request with its own timeout task and ack parse per message). It
takes no HTTP batch, so HTTP is compared with `{http_before}`, the tree with batches just
before the per-connection pipeline. Now a connection reads on while its publishes wait for
their acks (`neurelay/gateway/replying.py` keeps the replies in frame order, each
`published` after JetStream's ack), JetStream publishes are written without waiting and their
acks matched by reply token with one expiry timer (`neurelay/jetstream/publishing.py`), so
one event-loop pass reads a socket's frames, writes their publishes to NATS in one write and
their replies to the client in one. `ws` publishes through a gateway's WebSocket, `http` in
`POST /api/v1/publish` batches of 100, `direct` with `neurelay.publisher` (no gateway: its
CPU is the load column). The load generator is this Python process, so the wall rate is
bound by it on a shared two-core machine; the per core column divides by the gateway's own
CPU time. The goal is twice the WebSocket publishes per core of the tree before.

{table}"""


def _best(result: dict[str, Any], path: str) -> dict[str, int]:
    """The most publishes per gateway core-second of each system on `path`."""
    best: dict[str, int] = {}
    for run in result["runs"]:
        if run["path"] == path and run["per_gateway_core"]:
            best[run["system"]] = max(best.get(run["system"], 0), run["per_gateway_core"])
    return best


def ratio(result: dict[str, Any]) -> str:
    """Best publishes per gateway core now against the trees before, as text."""
    lines = []
    for path, before, how in (("ws", BEFORE, "WebSocket"), ("http", HTTP_BEFORE, "HTTP")):
        best = _best(result, path)
        if before in best and "neurelay" in best:
            lines.append(
                f"Best {how} run each: {best['neurelay']:,} publishes per gateway core-second "
                f"against {best[before]:,} for `{before}`, "
                f"{best['neurelay'] / best[before]:.2f} times as many.\n"
            )
    return "\n".join(lines)


def section(size: str) -> str:
    path = report.RESULTS / f"latest-publishing-{size}.json"
    if not path.exists():
        return ""
    result = json.loads(path.read_text())
    text = SECTION.format(before=BEFORE, http_before=HTTP_BEFORE, table=table(result), **result)
    return text + "\n" + ratio(result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.publishing")
    parser.add_argument("--publishes", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument(
        "--runs",
        # Each comparison twice, interleaved: the best of each counts, noise on a shared
        # machine falls on both.
        default=f"{BEFORE}:ws,neurelay:ws,{BEFORE}:ws,neurelay:ws,"
        f"{HTTP_BEFORE}:http,neurelay:http,{HTTP_BEFORE}:http,neurelay:http,neurelay:direct",
        help="comma-separated SYSTEM:PATH, PATH one of ws, http, direct",
    )
    parser.add_argument("--size", default="full")
    parser.add_argument("--results", type=Path, help="directory for results (bench/results)")
    args = parser.parse_args(argv)
    if args.results is not None:
        report.RESULTS = args.results
    result: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "publishes": args.publishes,
        "clients": args.clients,
        "window": args.window,
        "size": args.size,
        "runs": [],
    }
    for run in args.runs.split(","):
        spec, _, path = run.rpartition(":")
        print(f"[publishing] {spec} {path} ...", file=sys.stderr, flush=True)
        outcome = asyncio.run(measure(spec, path, args.publishes, args.clients, args.window))
        print(f"[publishing] {outcome}", file=sys.stderr, flush=True)
        result["runs"].append(outcome)
    report.RESULTS.mkdir(exist_ok=True)
    (report.RESULTS / f"latest-publishing-{args.size}.json").write_text(
        json.dumps(result, indent=1)
    )
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
