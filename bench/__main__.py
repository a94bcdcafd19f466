"""python -m bench SCENARIO [--size tiny|full] [--systems neurelay,socketio,nats]

Scenarios: fanout, channels, streaming, storm, idle; `all` runs them all and
rewrites docs/performance.md; `docs` only rewrites it from bench/results/;
`ceiling` is fan-out against the load generator's own minimal Go server.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import os
import resource
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench import report
from bench.driver import Progress, build_loadgen, run_loadgen
from bench.scenarios import PAYLOAD_BYTES, SCENARIOS, variants
from bench.systems import NATS_TOKEN, SECRET, make_system

DEFAULT_SYSTEMS = {"fanout": "neurelay,neurelay-batch,socketio,nats,ceiling"}


def raise_open_files() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > 1_048_576:
        hard = 1_048_576
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def cpu_split(mode: str, server_cpu: int) -> tuple[set[int] | None, set[int] | None]:
    """`pin`: servers on `server_cpu`, the load generator on the rest; otherwise no pinning."""
    cpus = os.sched_getaffinity(0)
    if mode != "pin" or len(cpus) < 2 or server_cpu not in cpus:
        return None, None
    return {server_cpu}, cpus - {server_cpu}


def start_profiler(pid: int, path: Path) -> subprocess.Popen[bytes] | None:
    exe = Path(sys.executable).with_name("py-spy")
    command = str(exe) if exe.exists() else "py-spy"
    try:
        return subprocess.Popen(
            [
                command,
                "record",
                "--pid",
                str(pid),
                "--rate",
                "200",
                "--nonblocking",
                "--format",
                "raw",
                "--output",
                str(path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except OSError:
        return None


def stop_profiler(process: subprocess.Popen[bytes] | None, path: Path) -> dict[str, Any] | None:
    if process is None:
        return None
    process.send_signal(signal.SIGINT)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        return None
    if not path.exists():
        return None
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f.strip() for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n

    def share(counts: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(f, round(100 * n / max(total, 1), 1)) for f, n in counts.most_common(30)]

    return {
        "samples": total,
        "self_percent": share(own),
        "inclusive_percent": share(inclusive),
        "raw": str(path),
    }


def display(spec: str) -> str:
    """`neurelay@/some/dir/patched` is shown as `neurelay@patched`, `neurelay@git:REV` as
    `neurelay@REV`."""
    name, _, source = spec.partition("@")
    if source.startswith("git:"):
        return f"{name}@{source[4:]}"
    return f"{name}@{Path(source).name}" if source else name


def run_scenario(scenario: str, args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    binary = build_loadgen()
    server_cpus, loadgen_cpus = cpu_split(args.cpus, args.server_cpu)
    grid = "fanout" if scenario == "ceiling" else scenario
    systems = (args.systems or DEFAULT_SYSTEMS.get(scenario, "neurelay,socketio,nats")).split(",")
    if scenario == "ceiling":
        systems = ["ceiling"]
    elif scenario != "fanout":
        systems = [s for s in systems if s != "ceiling"]  # only meaningful for fan-out
    chosen = variants(grid, args.size)
    if args.subscribers:
        wanted = set(args.subscribers.split(","))
        chosen = [v for v in chosen if v.key in wanted]
    result: dict[str, Any] = {
        "scenario": scenario,
        "size": args.size,
        "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "systems": [display(s) for s in systems],
        "machine": report.machine(),
        "cpus": args.cpus,
        "server_cpus": sorted(server_cpus) if server_cpus else None,
        "loadgen_cpus": sorted(loadgen_cpus) if loadgen_cpus else None,
        "payload_bytes": PAYLOAD_BYTES,
        "repeat": args.repeat,
        "variants": [{"key": v.key, "title": v.title, "config": v.config} for v in chosen],
        "runs": [],
        "failures": [],
    }
    for variant in chosen:
        for repeat, spec in [(k, s) for k in range(args.repeat) for s in systems]:
            label = f"{scenario} {variant.key} {display(spec)}" + (
                f" #{repeat + 1}" if args.repeat > 1 else ""
            )
            progress.update(f"[{label}] starting", force=True)
            t0 = time.monotonic()
            system = make_system(spec, server_cpus, binary)
            system.go_procs = 1 if args.cpus in ("pin", "limit") else None
            profiler = None
            profile_path = report.RESULTS / f"profile-{scenario}-{variant.key}-{display(spec)}.txt"
            try:
                with system:
                    config = dict(
                        variant.config,
                        protocol=system.protocol,
                        url=system.url,
                        pids=system.pids,
                        secret=SECRET,
                        nats_token=NATS_TOKEN,
                        payload_bytes=PAYLOAD_BYTES,
                        time_limit_seconds=args.time_limit,
                    )
                    if args.profile and "gateway" in system.pids:
                        report.RESULTS.mkdir(exist_ok=True)
                        profiler = start_profiler(system.pids["gateway"], profile_path)
                    try:
                        events = run_loadgen(binary, config, loadgen_cpus, label, progress)
                    finally:
                        profile = stop_profiler(profiler, profile_path)
                run: dict[str, Any] = {
                    "system": display(spec),
                    "source": spec.partition("@")[2] or None,
                    "variant": variant.key,
                    "repeat": repeat,
                    "events": events,
                    "seconds": round(time.monotonic() - t0, 1),
                }
                if profile:
                    run["profile"] = profile
                run["summary"] = report.summarize(grid, run)
                result["runs"].append(run)
            except Exception as e:  # one system failing must not hide the others' results
                progress.line(f"[{label}] FAILED: {e}")
                if args.verbose:
                    traceback.print_exc()
                    progress.line(system.log_tail())
                result["failures"].append(
                    {"system": display(spec), "variant": variant.key, "error": str(e)}
                )
    if result["runs"]:
        # A profiled run is slowed by the profiler: kept apart from the comparison.
        path = report.save(scenario + ("-profile" if args.profile else ""), args.size, result)
        progress.line(f"results: {path}")
        print(report.table(grid, result))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=[*SCENARIOS, "all", "docs", "ceiling"])
    parser.add_argument("--size", choices=["tiny", "full"], default="full")
    parser.add_argument(
        "--systems",
        help="comma-separated: neurelay[@SRC], neurelay-batch[@SRC], socketio, nats, ceiling",
    )
    parser.add_argument("--subscribers", help="fan-out: only these subscriber counts (1000,5000)")
    parser.add_argument("--profile", action="store_true", help="py-spy profile of the gateway")
    parser.add_argument(
        "--cpus",
        choices=["limit", "pin", "none"],
        default="limit",
        help="limit: Go servers get GOMAXPROCS=1 (the Python ones use one core anyway), nothing "
        "pinned; pin: also pin servers to --server-cpu and the load generator elsewhere",
    )
    parser.add_argument(
        "--server-cpu", type=int, default=0, help="the CPU for servers with --cpus pin"
    )
    parser.add_argument("--time-limit", type=float, default=900, help="per load generator run, s")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run each system N times, interleaved; tables show "
        "the best run (the machine may be shared: the best is the least disturbed)",
    )
    parser.add_argument("--results", type=Path, help="directory for results (bench/results)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.results is not None:
        report.RESULTS = args.results
    if args.scenario == "docs":
        print(report.write_docs(args.size))
        return 0
    raise_open_files()
    progress = Progress()
    scenarios = SCENARIOS if args.scenario == "all" else (args.scenario,)
    failed = False
    for scenario in scenarios:
        result = run_scenario(scenario, args, progress)
        failed = failed or bool(result["failures"]) or not result["runs"]
    if args.scenario == "all" and args.size == "full":
        progress.line(f"docs: {report.write_docs(args.size)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
