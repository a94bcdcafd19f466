"""python -m bench SCENARIO [--size tiny|full] [--systems neurelay,socketio,nats]

Scenarios: fanout, channels, streaming, storm, idle, cluster; `all` runs them
all, then the gateway's profile under fan-out and the bench modules
(admission, publishing, presence, replaying), and writes docs/performance.md
from that one run (at `tiny`, bench/results/performance-tiny.md); `docs`
only rewrites it from bench/results/; `ceiling` is fan-out against the load
generator's own minimal Go server.
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
from bench.driver import Progress, build_loadgen, run_loadgens
from bench.scenarios import PAYLOAD_BYTES, SCENARIOS, variants
from bench.systems import NATS_TOKEN, SECRET, make_system

DEFAULT_SYSTEMS = {
    "fanout": "neurelay,neurelay-batch,socketio,nats,centrifugo,ceiling",
    "idle": "neurelay,socketio,nats,centrifugo",
    "cluster": "neurelay-cluster",
}
# Rough minutes at full size on two cores, per (variant, system) run of each scenario and per
# bench module: printed before `all` starts so the whole run's length is known up front.
MINUTES_PER_RUN = {
    "fanout": 1.1,
    "channels": 1.2,
    "streaming": 0.4,
    "storm": 0.4,
    "idle": 0.8,
    "cluster": 2.0,
    "profile": 1.2,
    "admission": 2.0,
    "publishing": 2.0,
    "presence": 4.5,
    "replaying": 1.0,
}
MODULES = ("admission", "publishing", "presence", "replaying")


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


def scenario_systems(scenario: str, asked: str | None) -> list[str]:
    """The systems a scenario runs: those asked for that fit it, or its defaults."""
    default = DEFAULT_SYSTEMS.get(scenario, "neurelay,socketio,nats").split(",")
    if scenario == "ceiling":
        return ["ceiling"]
    if scenario == "cluster":  # only the three-gateway system: one gateway is the others' job
        chosen = [s for s in (asked or "").split(",") if s.startswith("neurelay-cluster")]
        return chosen or default
    systems = asked.split(",") if asked else default
    systems = [s for s in systems if not s.startswith("neurelay-cluster")]
    if scenario != "fanout":
        systems = [s for s in systems if s != "ceiling"]  # only meaningful for fan-out
    return systems


def fit_open_files(config: dict[str, Any], progress: Progress) -> int:
    """How many load generators a load needs: one holds every connection unless its open-file
    limit is lower; then a traffic load is shared by several, other loads hold fewer."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    room = hard - config.get("publishers", 0) - 200
    if hard == resource.RLIM_INFINITY or config["subscribers"] <= room:
        return 1
    if config["mode"] == "traffic":
        processes = -(-config["subscribers"] // room)
        progress.line(
            f"open-file limit {hard} (ulimit -Hn): {config['subscribers']:,} connections "
            f"over {processes} load generators"
        )
        return processes
    progress.line(
        f"open-file limit {hard} (ulimit -Hn): {room:,} connections instead of "
        f"{config['subscribers']:,}; raise the hard limit for the whole count"
    )
    config["subscribers"] = room
    return 1


def run_scenario(scenario: str, args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    binary = build_loadgen()
    server_cpus, loadgen_cpus = cpu_split(args.cpus, args.server_cpu)
    grid = "fanout" if scenario == "ceiling" else scenario
    systems = scenario_systems(scenario, args.systems)
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
                        urls=system.urls,
                        pids=system.pids,
                        secret=SECRET,
                        nats_token=NATS_TOKEN,
                        payload_bytes=PAYLOAD_BYTES,
                        time_limit_seconds=args.time_limit,
                    )
                    processes = config.pop("processes", 1)
                    processes = max(processes, fit_open_files(config, progress))
                    if args.profile and "gateway" in system.pids:
                        report.RESULTS.mkdir(exist_ok=True)
                        profiler = start_profiler(system.pids["gateway"], profile_path)
                    try:
                        events = run_loadgens(
                            binary, config, processes, loadgen_cpus, label, progress
                        )
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
    if args.scenario != "all":
        result = run_scenario(args.scenario, args, progress)
        return 1 if result["failures"] or not result["runs"] else 0
    return run_all(args, progress)


def estimate_minutes(args: argparse.Namespace) -> dict[str, float]:
    """Expected minutes of each part of `all` at full size (tiny: seconds, not shown)."""
    minutes = {}
    for scenario in SCENARIOS:
        runs = len(variants(scenario, "full")) * len(scenario_systems(scenario, args.systems))
        minutes[scenario] = MINUTES_PER_RUN[scenario] * runs
    minutes["profile"] = MINUTES_PER_RUN["profile"]
    for module in MODULES:
        minutes[module] = MINUTES_PER_RUN[module]
    return minutes


def run_all(args: argparse.Namespace, progress: Progress) -> int:
    """Every scenario, the profile and the bench modules in one run, then the page from it."""
    if args.size == "full":
        minutes = estimate_minutes(args)
        shown = ", ".join(f"{part} ~{m:.0f}" for part, m in minutes.items())
        progress.line(f"estimate (minutes): {shown}; total ~{sum(minutes.values()):.0f}")
    failed = False
    for scenario in SCENARIOS:
        result = run_scenario(scenario, args, progress)
        failed = failed or bool(result["failures"]) or not result["runs"]
    profiled = argparse.Namespace(**vars(args))
    profiled.profile, profiled.systems, profiled.repeat = True, "neurelay", 1
    profiled.subscribers = "1000" if args.size == "full" else None
    result = run_scenario("fanout", profiled, progress)
    failed = failed or bool(result["failures"]) or not result["runs"]
    for module in MODULES:
        progress.line(f"[{module}] starting")
        try:
            code = run_module(module, args.size)
        except Exception as e:  # one part failing must not lose the others' results
            progress.line(f"[{module}] FAILED: {e}")
            if args.verbose:
                traceback.print_exc()
            code = 1
        failed = failed or code != 0
    progress.line(f"docs: {report.write_docs(args.size)}")
    return 1 if failed else 0


# Each bench module's arguments in `all`: full is what docs/performance.md shows, tiny proves
# the module runs.
MODULE_ARGS = {
    "admission": {
        "full": ["--connections", "10000"],
        "tiny": ["--connections", "20", "--hold", "2", "--systems", "neurelay"],
    },
    "publishing": {
        "full": ["--publishes", "30000"],
        "tiny": ["--publishes", "200", "--runs", "neurelay:ws,neurelay:http,neurelay:direct"],
    },
    "presence": {
        "full": [],
        "tiny": [
            "--members",
            "20",
            "--queries",
            "3",
            "--storm",
            "10",
            "--storm-seconds",
            "1",
            "--storm-channels",
            "1,2-subscribe,2-subscribe-quiet",
        ],
    },
    "replaying": {"full": [], "tiny": ["--retained", "500", "--tries", "5"]},
}


def run_module(module: str, size: str) -> int:
    import importlib

    main_of = importlib.import_module(f"bench.{module}").main
    argv = [*MODULE_ARGS[module][size], "--size", size, "--results", str(report.RESULTS)]
    return int(main_of(argv))


if __name__ == "__main__":
    sys.exit(main())
