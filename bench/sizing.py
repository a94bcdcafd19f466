"""The sizing model of docs/capacity.md, computed from the results of `python -m bench all`.

Every figure is taken from a row of a table of docs/performance.md (named
next to it), every derived cost and the worked example for a million
connections are computed from those figures with the arithmetic printed, so
the page changes with the measurements and cannot drift from them.
`report.write_docs` calls `write` after it wrote the performance page.
"""

# ruff: noqa: RUF001  (the page's arithmetic uses the multiplication and minus signs)

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KiB = 1024
MiB = 1024 * 1024


@dataclass(frozen=True)
class Figure:
    value: float
    shown: str
    source: str  # the performance page's section and row it comes from


def _link(section: str) -> str:
    """A link to a section of the performance page (GitHub's heading anchors)."""
    anchor = re.sub(r"[^\w\- ]", "", section.lower()).replace(" ", "-")
    return f"[{section}](performance.md#{anchor})"


IDLE = _link("Idle capacity")
ADMISSION = _link("Per-user limit at idle")
STORM = _link("Connection storm")
PUBLISHING = _link("Publishing: per gateway core, and WebSocket, HTTP or direct")
FANOUT = _link("Fan-out: one channel, publishers at a rising rate")
STREAMING = _link("Token streaming")
CLUSTER = _link("Three gateways on a 3-node NATS cluster")


def _neurelay(runs: list[dict[str, Any]], variant: str | None = None) -> dict[str, Any] | None:
    from bench.report import best_runs

    for run in best_runs({"runs": runs}):
        if run["system"] == "neurelay" and (variant is None or run["variant"] == variant):
            return run
    return None


def figures(results: dict[str, dict[str, Any]]) -> dict[str, Figure]:
    """The measured quantities the model needs, each with the table row it comes from."""
    out: dict[str, Figure] = {}
    idle = results.get("idle")
    run = _neurelay(idle["runs"]) if idle else None
    if run:
        s = run["summary"]
        per = s["bytes_per_connection"]
        base = s["rss_at_max"] - s["held"] * per
        row = f"{IDLE}, row `neurelay`"
        out["memory_per_connection"] = Figure(per, f"{per / KiB:.1f} KiB", row)
        out["base_memory"] = Figure(
            base,
            f"{base / MiB:.0f} MiB",
            f"{row}: {s['rss_at_max'] / MiB:.0f} MiB at {s['held']:,} − {s['held']:,} × "
            f"{per / KiB:.1f} KiB",
        )
        out["connections_held"] = Figure(s["held"], f"{s['held']:,} (the most tried)", row)
    admission = results.get("admission")
    for entry in admission["runs"] if admission else []:
        if entry["system"] == "neurelay":
            cpu = entry["cpu"].get("gateway", 0.0)
            row = f"{ADMISSION}, row `neurelay`"
            out["idle_cpu"] = Figure(
                cpu / entry["connections"] * 1e6,
                f"{cpu:.3f} cores for {entry['connections']:,} connections",
                row,
            )
            if entry["writes_per_s"] is not None:
                out["kv_writes_idle"] = Figure(
                    entry["writes_per_s"], f"{entry['writes_per_s']:.2f} per second", row
                )
        elif entry["system"].startswith("neurelay@"):
            cpu = entry["cpu"].get("nats", 0.0)
            out["old_lease_nats"] = Figure(
                cpu / entry["connections"],
                f"{cpu:.3f} NATS cores for {entry['connections']:,} idle connections",
                f"{ADMISSION}, row `{entry['system']}`",
            )
    storm = results.get("storm")
    if storm:
        rates = [r["summary"]["storm"]["connections_per_s"] for r in storm["runs"]]
        rates = [
            r["summary"]["storm"]["connections_per_s"]
            for r in storm["runs"]
            if r["system"] == "neurelay"
        ] or rates
        if rates:
            out["connects"] = Figure(
                max(rates), f"{max(rates):,.0f} a second", f"{STORM}, row `neurelay`"
            )
    publishing = results.get("publishing")
    if publishing:
        for path, key in (("ws", "ws_per_core"), ("http", "http_per_core")):
            rows = [
                r
                for r in publishing["runs"]
                if r["system"] == "neurelay" and r["path"] == path and r["per_gateway_core"]
            ]
            if rows:
                best = max(rows, key=lambda r: r["per_gateway_core"])
                out[key] = Figure(
                    best["per_gateway_core"],
                    f"{best['per_gateway_core']:,}",
                    f"{PUBLISHING}, row `neurelay` `{path}`, publishes per gateway core-second",
                )
                out[f"nats_{path}"] = Figure(
                    best["nats_cpu_ms_per_1000"],
                    f"{best['nats_cpu_ms_per_1000']} ms",
                    f"{PUBLISHING}, row `neurelay` `{path}`, NATS CPU ms per 1,000",
                )
        direct = [r for r in publishing["runs"] if r["path"] == "direct"]
        if direct:
            out["nats_direct"] = Figure(
                direct[0]["nats_cpu_ms_per_1000"],
                f"{direct[0]['nats_cpu_ms_per_1000']} ms",
                f"{PUBLISHING}, row `neurelay` `direct`, NATS CPU ms per 1,000",
            )
    fanout = results.get("fanout")
    for variant in fanout["variants"] if fanout else []:
        run = _neurelay(fanout["runs"], variant["key"])
        if run:
            best = run["summary"]["best_step"]
            cpu = best["proc"]["servers"]["gateway"]["cpu"]
            rate = best["deliveries_per_s"]
            out[f"fanout_{variant['key']}"] = Figure(
                cpu / rate * 1e6,
                f"{rate:,.0f} deliveries/s at {cpu:.2f} gateway cores",
                f"{FANOUT}, {variant['title']}, row `neurelay`",
            )
    streaming = results.get("streaming")
    run = _neurelay(streaming["runs"]) if streaming else None
    if run:
        step = run["summary"]["best_step"]
        servers = step["proc"]["servers"]
        msgs = step["offered_msgs_per_s"]
        out["streaming"] = Figure(
            servers["gateway"]["cpu"] / msgs * 1e6,
            f"{msgs:,.0f} msg/s at {servers['gateway']['cpu']:.2f} gateway cores",
            f"{STREAMING}, row `neurelay`",
        )
        out["nats_stream"] = Figure(
            servers["nats"]["cpu"] / msgs * 1e6,
            f"{servers['nats']['cpu'] * 1000 / msgs * 1000:.0f} ms "
            f"({servers['nats']['cpu']:.2f} cores at {msgs:,.0f} msg/s)",
            f"{STREAMING}, row `neurelay`, nats CPU",
        )
    cluster = results.get("cluster")
    if cluster and cluster["runs"]:
        steps = [s for s in cluster["runs"][0]["summary"]["steps"] if not s["breakdown"]]
        if steps:
            step = max(steps, key=lambda s: s["deliveries_per_s"])
            servers = step["proc"]["servers"]
            gateways = sum(v["cpu"] for k, v in servers.items() if k.startswith("gateway"))
            nodes = sum(v["cpu"] for k, v in servers.items() if k.startswith("nats"))
            msgs, deliveries = step["offered_msgs_per_s"], step["deliveries_per_s"]
            rates = " + ".join(f"{x:,.0f}" for x in step["stream_rates"])
            where = f"{CLUSTER} (the three-gateway table), row {rates}"
            out["cluster_gateways"] = Figure(
                gateways / deliveries * 1e6,
                f"{gateways:.2f} cores over 3 gateways for {deliveries:,.0f} deliveries/s",
                where,
            )
            out["cluster_nats"] = Figure(
                nodes / msgs * 1e6,
                f"{nodes:.2f} cores over 3 nodes for {msgs:,.0f} msg/s stored on 3 replicas",
                where,
            )
            out["cluster_p99"] = Figure(
                step["latency_ms"]["p99"], f"{step['latency_ms']['p99']:.1f} ms", where
            )
    return out


def _table(rows: list[tuple[str, str | None]], f: dict[str, Figure]) -> str:
    lines = ["| quantity | measured | from docs/performance.md |", "|---|---:|---|"]
    for label, key in rows:
        if key is None or key not in f:
            lines.append(f"| {label} | not measured in this run | |")
        else:
            lines.append(f"| {label} | {f[key].shown} | {f[key].source} |")
    return "\n".join(lines) + "\n"


def render(results: dict[str, dict[str, Any]], started: str, size: str) -> str:
    f = figures(results)
    parts = [
        HEADER.format(started=started, size=size),
        "\n## One gateway process\n\n",
        "A gateway process runs one event loop: it uses one core at most, so size it with a "
        "CPU request of one core and scale out with replicas.\n\n",
        _table(
            [
                ("memory per idle authenticated connection", "memory_per_connection"),
                ("process memory without connections", "base_memory"),
                ("connections held by one process", "connections_held"),
                ("CPU at idle", "idle_cpu"),
                ("connections accepted per second", "connects"),
                ("WebSocket publishes per core-second", "ws_per_core"),
                ("HTTP batch publishes per core-second", "http_per_core"),
                ("fan-out to 1,000 subscribers a channel", "fanout_1000"),
                ("fan-out to 5,000 subscribers a channel", "fanout_5000"),
                ("one message in and out, one subscriber each", "streaming"),
            ],
            f,
        ),
    ]
    costs = _costs(f)
    if costs:
        parts.append("\nDerived per-item costs of a gateway core:\n\n" + costs)
    parts.append("\n## NATS\n\n")
    parts.append(
        _table(
            [
                ("NATS CPU per 1,000 publishes through a gateway", "nats_ws"),
                ("NATS CPU per 1,000 publishes in HTTP batches", "nats_http"),
                ("NATS CPU per 1,000 publishes direct (`neurelay.publisher`)", "nats_direct"),
                ("NATS CPU per 1,000 messages stored, republished, delivered", "nats_stream"),
                ("key-value writes of the per-user limit at idle, one replica", "kv_writes_idle"),
            ],
            f,
        )
    )
    parts.append(NATS_NOTES)
    parts.append("\n## Three gateways on a 3-node cluster\n\n")
    parts.append(
        _table(
            [
                ("gateway CPU per delivery, the three together", "cluster_gateways"),
                ("NATS CPU per message stored on three replicas, three nodes", "cluster_nats"),
                ("end-to-end p99 at that load", "cluster_p99"),
            ],
            f,
        )
    )
    if "cluster_gateways" in f and "cluster_nats" in f:
        parts.append(
            f"\nPer delivery, the three gateways together spent "
            f"{f['cluster_gateways'].value:.1f} µs; per message stored on three replicas, the "
            f"three NATS nodes together {f['cluster_nats'].value:.0f} µs. These include the "
            "work a fleet adds over one gateway (each gateway receives from NATS every message "
            "of every channel one of its clients follows, the JetStream replication).\n"
        )
    parts.append(AUTOSCALING)
    parts.append(_example(f))
    return "".join(parts)


def _costs(f: dict[str, Figure]) -> str:
    lines = []
    if "ws_per_core" in f:
        lines.append(
            f"- a WebSocket publish: 1 / {f['ws_per_core'].value:,.0f} ≈ "
            f"**{1e6 / f['ws_per_core'].value:.0f} µs**;"
        )
    if "fanout_1000" in f:
        lines.append(f"- a delivery in a large fan-out: **{f['fanout_1000'].value:.1f} µs**;")
    if "streaming" in f and "ws_per_core" in f:
        single = f["streaming"].value - 1e6 / f["ws_per_core"].value
        lines.append(
            f"- a message received from NATS and delivered once: {f['streaming'].value:.0f} µs "
            f"per message published and delivered through the same gateway, minus the publish, "
            f"≈ **{single:.0f} µs**;"
        )
    if "idle_cpu" in f:
        lines.append(
            f"- an idle connection: **{f['idle_cpu'].value:.1f} µs per second** (pings; the "
            "per-user limit costs nothing at idle)."
        )
    return "\n".join(lines) + "\n" if lines else ""


def _example(f: dict[str, Figure]) -> str:
    needed = (
        "memory_per_connection",
        "base_memory",
        "idle_cpu",
        "ws_per_core",
        "fanout_1000",
        "streaming",
        "nats_direct",
        "nats_ws",
    )
    missing = [k for k in needed if k not in f]
    if missing:
        return (
            "\n## Worked example: 1,000,000 connections\n\nNeeds the figures of a full run of "
            f"`python -m bench all` (missing here: {', '.join(missing)}).\n"
        )
    per_kib = f["memory_per_connection"].value / KiB
    base_mib = f["base_memory"].value / MiB
    pod_mib = base_mib + 10_000 * per_kib / 1024
    publish = 1e6 / f["ws_per_core"].value
    single = f["streaming"].value - publish
    fan = f["fanout_1000"].value
    idle = f["idle_cpu"].value
    cpu_rows = [
        ("idle upkeep", f"1,000,000 × {idle:.1f} µs/s", 1e6 * idle / 1e6),
        (
            "`user:` messages, one subscriber each",
            f"100,000 msg/s × {single:.0f} µs",
            100_000 * single / 1e6,
        ),
        ("`system` broadcast", f"16,700 deliveries/s × {fan:.1f} µs", 16_700 * fan / 1e6),
        ("client publishes over WebSocket", f"20,000/s × {publish:.0f} µs", 20_000 * publish / 1e6),
        (
            "their deliveries, one subscriber each",
            f"20,000/s × {single:.0f} µs",
            20_000 * single / 1e6,
        ),
    ]
    gateway_cores = sum(c for _, _, c in cpu_rows)
    # µs per message is ms per 1,000 messages.
    stream_ms = f["nats_stream"].value if "nats_stream" in f else None
    nats_rows = [
        (
            "100,000 `user:` publishes, direct",
            f"100 × {f['nats_direct'].value} ms",
            100 * f["nats_direct"].value / 1000,
        ),
        (
            "20,000 client publishes through gateways",
            f"20 × {f['nats_ws'].value} ms",
            20 * f["nats_ws"].value / 1000,
        ),
    ]
    if stream_ms is not None:
        nats_rows.append(
            (
                "republish and delivery to the gateways",
                f"120 × {stream_ms:.0f} ms",
                120 * stream_ms / 1000,
            )
        )
    nats_cores = sum(c for _, _, c in nats_rows)
    lines = [
        EXAMPLE_INTRO,
        f"**Gateways, by connections.** At 10,000 connections per pod: 1,000,000 / 10,000 = "
        f"**100 pods**, each {base_mib:.0f} MiB + 10,000 × {per_kib:.1f} KiB = "
        f"**{pod_mib:.0f} MiB** (≈ {pod_mib * 100 / 1024:.0f} GiB in all; with a 1.5× margin "
        f"for send queues under bursts, a {pod_mib * 1.5:.0f} MiB limit per pod).\n",
        "\n**Gateways, by CPU.**\n\n| load | arithmetic | cores |\n|---|---|---:|",
        *(f"| {what} | {how} | {cores:.2f} |" for what, how, cores in cpu_rows),
        f"| total | | **{gateway_cores:.1f}** |\n",
        f"{gateway_cores:.1f} cores over 100 pods is {gateway_cores / 100:.2f} cores per pod"
        + (
            ": at this traffic the fleet is sized by connections (memory), not CPU."
            if gateway_cores / 100 < 0.6
            else ": CPU, not memory, sizes the fleet; add pods until each runs below 0.6 cores."
        )
        + " Publishing the `user:` messages from backends with `neurelay.publisher` keeps "
        "their publish cost off the gateways.\n",
        "\n**NATS**, one replica per stream:\n\n| load | arithmetic | cores |\n|---|---|---:|",
        *(f"| {what} | {how} | {cores:.2f} |" for what, how, cores in nats_rows),
        f"| total | | **{nats_cores:.1f}** |\n",
    ]
    if "cluster_nats" in f:
        replicated = 120_000 * f["cluster_nats"].value / 1e6
        lines.append(
            f"With `replicas: 3` on a three-node cluster, from {f['cluster_nats'].source}: "
            f"120,000 stored messages/s × {f['cluster_nats'].value:.0f} µs = "
            f"**{replicated:.0f} cores** over the three nodes, "
            f"{replicated / 3:.0f} a node; plan nodes with twice that.\n"
        )
    if "old_lease_nats" in f:
        lines.append(
            f"\nFor contrast, the per-user limit's old design (a write per user every 10 s) "
            f"cost {f['old_lease_nats'].shown} ({f['old_lease_nats'].source}): for a million "
            f"connections about **{f['old_lease_nats'].value * 1e6:.0f} NATS cores** for doing "
            "nothing; now it is one heartbeat per replica.\n"
        )
    return "\n".join(lines)


def write(path: Path, results: dict[str, dict[str, Any]], started: str, size: str) -> Path:
    path.write_text(render(results, started, size))
    return path


HEADER = """# Capacity: sizing gateways and NATS

A sizing model for a platform team, computed by `python -m bench all` from
the run that wrote [performance.md](performance.md) (started {started},
{size}): each figure names the table and row of that page it comes from,
and every derived figure shows its arithmetic. All come from one shared
two-core machine: treat them as planning figures with a generous margin
(the performance page calls differences under ~20 % noise), and re-measure
on your hardware with `python -m bench all`.
"""

NATS_NOTES = """
These are for a single server with file storage and one replica per
stream; the cluster section below measures three replicas.
"""

AUTOSCALING = """
## What to autoscale on

Scale gateway replicas on **CPU utilisation** (Kubernetes HPA, `type:
Resource`, target 60 % of a one-core request), and add
`neurelay_connections` per pod as a second, custom metric with a target of
10,000.

- Every cost that can grow fast converges on the one core: publishes,
  deliveries, connects (the per-item costs above). CPU is the first thing a
  gateway runs out of, and it weighs each kind of work by its real cost.
- Memory grows only with connections and predictably (above), so the
  connections metric guards it.
- Connections are long-lived: a new replica only gets *new* connections,
  so scale early (60 %, not 90 %), and let draining
  (`drain.period_seconds`, 1012 "try again") move clients when a pod goes.
- Do not scale on publishes or deliveries directly: their cost per item
  differs many times over between a large fan-out and one subscriber per
  channel; CPU already weighs them.

NATS is sized separately (it does not autoscale): from the publish and
delivery rates with the per-1,000 figures above, doubled for headroom.
"""

EXAMPLE_INTRO = """
## Worked example: 1,000,000 connections

Assumptions: one million authenticated connections, each following its own
`user:` channel and `system`; every connection gets one message every 10
seconds on its `user:` channel (published by backends), one `system`
broadcast a minute, and 20,000 publishes a second in total come from
clients over WebSocket (token streams into conversations with one
subscriber each).
"""
