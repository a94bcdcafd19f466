"""Fixtures of the image tests: the image built by scripts/build-image, loaded into buildah.

The archive comes from NEURELAY_IMAGE_ARCHIVE (scripts/test builds it first, so its
progress and size show in the CI log) or from running scripts/build-image here, which
returns at once when nothing that goes into the image changed. Without buildah the
tests skip, except in CI (CI set), where that is an error. Containers run on the host
network, so their ports (8080, 8081, 9090) are host ports: a lock file serialises the
tests that start them across concurrent test runs on one machine.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.image.pods import Image

REPO = Path(__file__).resolve().parents[2]
LOCK_PATH = Path("/tmp/neurelay-image-pods.lock")


@pytest.fixture(scope="session")
def image_archive() -> Path:
    given = os.environ.get("NEURELAY_IMAGE_ARCHIVE")
    if given:
        return Path(given)
    if shutil.which("buildah") is None:
        if os.environ.get("CI"):
            pytest.fail("buildah is not installed (scripts/test installs it)")
        pytest.skip("buildah is not installed (apt-get install buildah mmdebstrap)")
    result = subprocess.run(
        [str(REPO / "scripts/build-image"), "--builder", "buildah"],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    assert result.returncode == 0, "scripts/build-image failed; its output is above"
    return Path(result.stdout.splitlines()[-1])


@pytest.fixture(scope="session")
def image(image_archive: Path) -> Image:
    return Image.pull(image_archive)


@pytest.fixture(scope="session")
def host_ports() -> Iterator[None]:
    """Held while containers listen on their (host) ports."""
    with LOCK_PATH.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
