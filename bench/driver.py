"""Building and driving the Go load generator, with a progress display."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.systems import BENCH_DIR

GO_SOURCE = BENCH_DIR / "loadgen"
BUILD_DIR = BENCH_DIR / ".build"


def go_binary() -> str:
    for candidate in (os.environ.get("GO"), shutil.which("go"), "/usr/local/go/bin/go"):
        if candidate and Path(candidate).exists():
            return candidate
    raise RuntimeError("the Go toolchain is needed to build bench/loadgen (set GO=/path/to/go)")


def build_loadgen() -> Path:
    """Build bench/.build/loadgen unless it is newer than every Go source file."""
    binary = BUILD_DIR / "loadgen"
    sources = [*GO_SOURCE.glob("*.go"), GO_SOURCE / "go.mod", GO_SOURCE / "go.sum"]
    if binary.exists() and binary.stat().st_mtime >= max(p.stat().st_mtime for p in sources):
        return binary
    BUILD_DIR.mkdir(exist_ok=True)
    env = dict(os.environ, CGO_ENABLED="0")
    subprocess.run(
        [go_binary(), "build", "-trimpath", "-o", str(binary), "."],
        cwd=GO_SOURCE,
        env=env,
        check=True,
    )
    return binary


class Progress:
    """One status line, redrawn in place on a terminal, printed every few seconds otherwise."""

    def __init__(self, stream: Any = sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._last = 0.0
        self._width = 0

    def update(self, text: str, force: bool = False) -> None:
        if self.tty:
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self.stream.flush()
            self._width = len(text)
        elif force or time.monotonic() - self._last > 5:
            self.stream.write(text + "\n")
            self.stream.flush()
            self._last = time.monotonic()

    def line(self, text: str) -> None:
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        self.stream.write(text + "\n")
        self.stream.flush()


def describe(event: dict[str, Any]) -> str:
    kind = event["event"]
    if kind == "progress":
        return f"{event['phase']}: {event['done']}/{event['total']}"
    if kind == "setup":
        return (
            f"set-up: {event['connections']} connections at {event['connections_per_s']:.0f}/s, "
            f"subscribed at {event['subscriptions_per_s']:.0f}/s"
        )
    if kind == "step":
        lat = event["latency_ms"]
        cpu = ", ".join(f"{k} {v['cpu']:.2f}" for k, v in event["proc"]["servers"].items())
        offered = event["offered_deliveries_per_s"]
        broke = " BREAKDOWN" if event["breakdown"] else ""
        return (
            f"step {event['step']} ({event['phase']}): offered {offered:,.0f}"
            f" deliveries/s, got {event['deliveries_per_s']:,.0f}/s, p50 {lat['p50']:.2f} ms, "
            f"p99 {lat['p99']:.2f} ms, lost {event['lost']}, cpu [{cpu}], "
            f"loadgen {event['proc']['loadgen_cpu']:.2f}{broke}"
        )
    if kind == "storm":
        return (
            f"storm: {event['connected']}/{event['clients']} in {event['seconds_to_last']:.2f} s "
            f"({event['connections_per_s']:.0f}/s), p99 {event['latency_ms']['p99']:.0f} ms"
        )
    if kind == "drain":
        return f"waited {event['seconds']:.1f} s for the ramp's backlog to arrive"
    if kind == "idle":
        rss = ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in event["rss_bytes"].items())
        return f"idle: {event['connections']} connections, rss [{rss}]"
    if kind == "idle_hold":
        cpu = ", ".join(f"{k} {v['cpu']:.3f}" for k, v in event["proc"]["servers"].items())
        return f"idle hold: {event['connections']} connections, cpu [{cpu}]"
    return json.dumps(event)


def run_loadgen(
    binary: Path,
    config: dict[str, Any],
    cpus: set[int] | None,
    label: str,
    progress: Progress,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run one load generator session; returns its events (raises on an error event)."""

    def preexec() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    env = dict(os.environ)
    if cpus:
        env["GOMAXPROCS"] = str(len(cpus))
    process = subprocess.Popen(
        [str(binary)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=preexec,
        env=env,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    process.stdin.write(json.dumps(config).encode())
    process.stdin.close()
    events: list[dict[str, Any]] = []
    try:
        for raw in process.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            events.append(event)
            if on_event is not None:
                on_event(event)
            text = f"[{label}] {describe(event)}"
            if event["event"] == "progress":
                progress.update(text)
            elif event["event"] not in ("start", "done"):
                progress.line(text)
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.wait(timeout=30)
        if process.poll() is None:
            process.kill()
            process.wait()
    errors = [e for e in events if e["event"] == "error"]
    if errors or process.returncode:
        stderr = process.stderr.read().decode(errors="replace")[-2000:] if process.stderr else ""
        message = errors[0]["message"] if errors else f"exit {process.returncode}: {stderr}"
        raise RuntimeError(f"load generator failed ({label}): {message}")
    return events


def split_config(config: dict[str, Any], processes: int) -> list[dict[str, Any]]:
    """A traffic load shared by `processes` load generators (when one may not open enough
    sockets): each holds a slice of the users and publishes to them at its share of the
    per-user rate; the first alone publishes the streams every user follows (`system`)."""
    n, epoch = config["subscribers"], time.time_ns() // 1000
    parts = []
    for k in range(processes):
        first, last = n * k // processes, n * (k + 1) // processes
        streams = []
        for stream in config["streams"]:
            if "{i}" in stream["channel"]:
                share = (last - first) / n
                streams.append(dict(stream, count=last - first, rate=stream["rate"] * share))
            elif k == 0:
                streams.append(stream)
        parts.append(
            dict(
                config,
                subscribers=last - first,
                user_offset=first,
                origin=k,
                epoch_unix_us=epoch,
                publishers=max(1, config.get("publishers", 1) // processes),
                streams=streams,
            )
        )
    return parts


def merge_events(
    parts: list[list[dict[str, Any]]], shared_rates: list[float]
) -> list[dict[str, Any]]:
    """One traffic run's events from those of the load generators that shared it: rates and
    counts add up; latency percentiles are the worst process's (a bound, not a merge); CPU
    and memory are the first's (every process samples the same servers). `shared_rates` are
    the rates of the streams every user follows, published by the first process only."""
    first = parts[0]

    def of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
        return [e for e in events if e["event"] == kind]

    setups = [of(events, "setup")[0] for events in parts]
    setup = dict(setups[0])
    for key in ("connections", "connections_per_s", "subscriptions_per_s"):
        setup[key] = sum(s[key] for s in setups)
    setup["processes"] = len(parts)
    others = sum(s["connections"] for s in setups[1:])
    merged: list[dict[str, Any]] = [e for e in first if e["event"] == "start"] + [setup]
    steps = [of(events, "step") for events in parts]
    for index in range(min(len(s) for s in steps)):
        each = [s[index] for s in steps]
        step = dict(each[0])
        for key in ("offered_msgs_per_s", "published_msgs_per_s", "deliveries_per_s"):
            step[key] = sum(e[key] for e in each)
        for key in ("expected", "received", "lost", "publish_errors", "disconnects"):
            step[key] = sum(e[key] for e in each)
        step["offered_deliveries_per_s"] = (
            sum(e["offered_deliveries_per_s"] for e in each) + sum(shared_rates) * others
        )
        step["latency_ms"] = {
            q: max(e["latency_ms"][q] for e in each) for q in each[0]["latency_ms"]
        }
        step["breakdown"] = any(e["breakdown"] for e in each)
        step["stream_rates"] = [
            sum(e["stream_rates"][0] for e in each),
            *each[0]["stream_rates"][1:],
        ]
        merged.append(step)
    merged += [e for e in first if e["event"] == "done"]
    return merged


def run_loadgens(
    binary: Path,
    config: dict[str, Any],
    processes: int,
    cpus: set[int] | None,
    label: str,
    progress: Progress,
) -> list[dict[str, Any]]:
    """Run a traffic load over `processes` load generators at once; their merged events."""
    if processes <= 1:
        return run_loadgen(binary, config, cpus, label, progress)
    import concurrent.futures

    parts = split_config(config, processes)
    shared = [s["rate"] for s in config["streams"] if "{i}" not in s["channel"]]
    with concurrent.futures.ThreadPoolExecutor(processes) as pool:
        futures = [
            pool.submit(run_loadgen, binary, part, cpus, f"{label} {k + 1}/{processes}", progress)
            for k, part in enumerate(parts)
        ]
        events = [f.result() for f in futures]
    return merge_events(events, shared)
