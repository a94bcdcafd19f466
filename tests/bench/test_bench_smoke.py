"""Smoke test of the benchmark suite: `bench all` once, tiny, for every system.

It proves that the load generator builds, that each system starts, that
every scenario and bench module runs to the end and writes its results, and
that the performance page renders from them; it asserts nothing about speed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = ("fanout", "channels", "streaming", "storm", "idle")
SYSTEMS = ("neurelay", "neurelay-batch", "socketio", "nats")
MODULES = ("admission", "publishing", "presence", "replaying")


def _go() -> str | None:
    return (
        os.environ.get("GO")
        or shutil.which("go")
        or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    )


@pytest.mark.timeout(600)
def test_every_scenario_runs_at_the_tiny_size(tmp_path: Path) -> None:
    # The bench extra and Go are part of the test set-up (scripts/test): missing is a failure.
    assert importlib.util.find_spec("socketio") is not None, "pip install -e '.[bench]'"
    assert _go() is not None, "the Go toolchain builds the load generator"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "all",
            "--size",
            "tiny",
            "--systems",
            ",".join(SYSTEMS),
            "--results",
            str(tmp_path),
        ],
        cwd=REPO,
        env={**os.environ, "GO": _go() or ""},
        capture_output=True,
        text=True,
        timeout=590,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    for scenario in SCENARIOS:
        result = json.loads((tmp_path / f"latest-{scenario}-tiny.json").read_text())
        assert result["failures"] == []
        assert {run["system"] for run in result["runs"]} == set(SYSTEMS)
        for run in result["runs"]:
            kinds = {event["event"] for event in run["events"]}
            assert "done" in kinds
            assert "error" not in kinds
        assert (tmp_path / f"latest-{scenario}-tiny.md").read_text().count("|") > 0
    assert (tmp_path / "latest-fanout-tiny.png").stat().st_size > 0
    cluster = json.loads((tmp_path / "latest-cluster-tiny.json").read_text())
    assert cluster["failures"] == []
    assert [run["system"] for run in cluster["runs"]] == ["neurelay-cluster"]
    servers = cluster["runs"][0]["summary"]["steps"][0]["proc"]["servers"]
    assert {"gateway-1", "gateway-2", "gateway-3", "nats-1", "nats-2", "nats-3"} <= set(servers)
    for module in ("fanout-profile", *MODULES):
        assert (tmp_path / f"latest-{module}-tiny.json").exists(), module
    page = (tmp_path / "performance-tiny.md").read_text()
    for heading in ("## Goals", "## Three gateways", "## `last` and `since`", "## Presence"):
        assert heading in page
