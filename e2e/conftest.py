"""Prints the end-to-end results table at the end of the run, whatever pytest captured."""

from __future__ import annotations

from typing import Any

from e2e.test_dataplane import ARTIFACTS


def pytest_terminal_summary(terminalreporter: Any) -> None:
    results = ARTIFACTS / "e2e-results.md"
    if results.exists():
        terminalreporter.section("end-to-end results (sent, delivered, lost, duplicated)")
        terminalreporter.write(results.read_text())
