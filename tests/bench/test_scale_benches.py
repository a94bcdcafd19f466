"""Smoke tests of `bench.admission` and `bench.publishing`: they run at a tiny size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.test_bench_smoke import REPO, _go


@pytest.mark.timeout(180)
def test_admission_bench_runs_at_a_tiny_size(tmp_path: Path) -> None:
    assert _go() is not None, "the Go toolchain builds the load generator"
    options = ["--connections", "20", "--hold", "2.5", "--systems", "neurelay", "--size", "tiny"]
    completed = subprocess.run(
        [sys.executable, "-m", "bench.admission", *options, "--results", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads((tmp_path / "latest-admission-tiny.json").read_text())
    (run,) = result["runs"]
    assert run["connections"] == 20
    assert run["writes_per_s"] is not None


RUNS = "neurelay:ws,neurelay:http,neurelay:direct"


@pytest.mark.timeout(180)
def test_publishing_bench_runs_every_path_at_a_tiny_size(tmp_path: Path) -> None:
    options = ["--publishes", "400", "--clients", "2", "--size", "tiny", "--results", str(tmp_path)]
    completed = subprocess.run(
        [sys.executable, "-m", "bench.publishing", *options, "--runs", RUNS],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads((tmp_path / "latest-publishing-tiny.json").read_text())
    assert [run["path"] for run in result["runs"]] == ["ws", "http", "direct"]


@pytest.mark.timeout(180)
def test_presence_bench_runs_at_a_tiny_size(tmp_path: Path) -> None:
    options = ["--members", "9", "--queries", "3", "--storm", "6", "--storm-seconds", "1"]
    options += ["--storm-channels", "1,100-subscribe,100-subscribe-quiet"]
    options += ["--size", "tiny", "--results", str(tmp_path)]
    completed = subprocess.run(
        [sys.executable, "-m", "bench.presence", *options],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads((tmp_path / "latest-presence-tiny.json").read_text())
    assert (result["presence"]["listed"], result["presence"]["stats"]["users"]) == (9, 9)
    one_channel, spread, quiet = result["storms"]
    assert (one_channel["kind"], one_channel["join_frames_delivered"]) == ("connect", 6 * 5 // 2)
    assert (spread["kind"], spread["storm_channels"]) == ("subscribe", 100)
    assert (quiet["join_leave"], quiet["join_frames_delivered"]) == (False, 0)
