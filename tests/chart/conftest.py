"""Fixtures for the chart tests: the locally built control plane binaries (helm among them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.control_plane import ensure_built


@pytest.fixture(scope="session")
def control_plane_bin() -> Path:
    return ensure_built()
