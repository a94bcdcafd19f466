"""The image itself: its user, a read-only root, nothing to build or install with, its size."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.image.pods import Image, WorkingContainer

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
VENV = "opt/neurelay"


@pytest.fixture(scope="module")
def container(image: Image) -> Iterator[WorkingContainer]:
    working = image.container()
    yield working
    working.remove()


def run(container: WorkingContainer, image: Image, *argv: str) -> str:
    result = container.run(
        list(argv),
        user=image.config["User"],
        read_only=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out, _ = result.communicate(timeout=120)
    assert result.returncode == 0, out.decode()
    return out.decode()


def test_image_runs_as_the_non_root_user_10001(image: Image, container: WorkingContainer):
    assert image.config["User"] == "10001:10001"
    assert run(container, image, "id", "-u").strip() == "10001"
    passwd = (container.rootfs / "etc/passwd").read_text()
    assert re.search(r"^neurelay:x:10001:10001:", passwd, re.MULTILINE)


def test_neurelay_version_answers_on_a_read_only_root(image: Image, container: WorkingContainer):
    version = importlib.metadata.version("neurelay")
    assert image.config["Entrypoint"] == ["neurelay"]
    assert run(container, image, "neurelay", "--version").strip() == f"neurelay {version}"


def test_the_read_only_root_refuses_writes_outside_the_volumes(
    image: Image, container: WorkingContainer
):
    # The check of the check: what the gateway and operator tests rely on holds.
    out = run(
        container,
        image,
        "sh",
        "-c",
        "for d in /opt/neurelay /etc /var/tmp /run/lock; do touch $d/x 2>&1; done; true",
    )
    assert out.count("Read-only file system") == 4, out


def test_no_compilers_package_manager_caches_or_build_leftovers(container: WorkingContainer):
    root = container.rootfs
    bins = [root / "usr/bin", root / "usr/local/bin", root / VENV / "bin"]
    compilers = ["gcc", "cc", "c++", "g++", "clang", "ld", "as", "make", "rustc", "go"]
    found = [str(d / name) for d in bins for name in compilers if (d / name).exists()]
    assert not found, f"compilers in the image: {found}"
    assert not (root / VENV / "bin/pip").exists(), "pip left in the virtualenv"
    leftovers = [
        *root.glob("root/.cache/*"),
        *root.glob("home/*/.cache/*"),
        *root.glob("tmp/*"),
        *root.glob("var/cache/apt/*.bin"),
        *root.glob("var/cache/apt/archives/*.deb"),
        *(p for p in root.glob("var/lib/apt/lists/*") if p.name not in ("lock", "partial")),
        *root.glob("src"),
        *root.glob("opt/**/*.whl"),
        *root.glob("run/secrets/*"),
        *root.glob("etc/pip.conf"),
    ]
    assert not leftovers, f"caches or build leftovers: {leftovers[:20]}"


def _size(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def test_image_size_is_within_the_budget_the_readme_states(container: WorkingContainer, capsys):
    budget = int(re.search(r"size\s+budget:\s+(\d+)\s+MB", (REPO / "README.md").read_text())[1])
    root = container.rootfs
    total = _size(root)
    site = next((root / VENV / "lib").glob("python3.*/site-packages"))
    parts = {"virtualenv": _size(root / VENV), "base (everything else)": total - _size(root / VENV)}
    biggest = sorted(((_size(p), p.name) for p in site.iterdir() if p.is_dir()), reverse=True)
    with capsys.disabled():
        print(f"\n[image] {total / 1e6:.0f} MB unpacked (budget {budget} MB):")
        for name, size in parts.items():
            print(f"[image]   {name}: {size / 1e6:.0f} MB")
        for size, name in biggest[:6]:
            print(f"[image]     {name}: {size / 1e6:.0f} MB")
        nats_server = (root / VENV / "bin/nats-server").stat().st_size
        print(f"[image]     nats-server (bin): {nats_server / 1e6:.0f} MB")
    assert total <= budget * 1e6


def test_archive_names_the_image_for_containerd_podman_and_docker(image: Image):
    with tarfile.open(image.archive) as archive:
        index = json.load(archive.extractfile("index.json"))  # type: ignore[arg-type]
    (manifest,) = index["manifests"]
    version = importlib.metadata.version("neurelay")
    expected = f"docker.io/library/neurelay:{version}"
    # kind's `ctr import` reads the first, podman and docker the second.
    assert manifest["annotations"]["io.containerd.image.name"] == expected
    assert manifest["annotations"]["org.opencontainers.image.ref.name"] == expected


def test_no_layer_holds_the_build_machines_pip_configuration_or_ca_bundle(image: Image):
    with tarfile.open(image.archive) as archive:
        index = json.load(archive.extractfile("index.json"))  # type: ignore[arg-type]
        digest = index["manifests"][0]["digest"].split(":")[1]
        manifest = json.load(archive.extractfile(f"blobs/sha256/{digest}"))  # type: ignore[arg-type]
        found = []
        for layer in manifest["layers"]:
            blob = archive.extractfile(f"blobs/sha256/{layer['digest'].split(':')[1]}")
            with tarfile.open(fileobj=blob, mode="r|*") as files:
                found += [
                    f.name
                    for f in files
                    if f.name.lstrip("./").startswith("run/secrets")
                    or f.name.endswith(("pip.conf", "ca-bundle"))
                ]
    assert manifest["layers"]
    assert not found, found


def test_stopping_build_image_stops_its_build_and_leaves_nothing_behind(tmp_path: Path):
    if shutil.which("buildah") is None:
        pytest.skip("buildah is not installed")
    tag = f"neurelay:stopped-{os.getpid()}"
    containers_before = _buildah_lines("containers", "--quiet")
    script = subprocess.Popen(
        [str(REPO / "scripts/build-image"), "--builder", "buildah", "--rebuild", "--tag", tag],
        env={**os.environ, "NEURELAY_CACHE": str(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert script.stderr is not None
    for line in script.stderr:
        if "building docker.io/library/" + tag in line:
            break
    script.terminate()  # the build has just started
    assert script.wait(timeout=60) == 143
    script.stderr.close()

    assert _buildah_lines("containers", "--quiet") == containers_before
    assert not [
        name
        for name in _buildah_lines("images", "--format", "{{.Name}}:{{.Tag}}")
        if name.endswith("/" + tag)
    ]
    assert not list(tmp_path.glob("*.oci.tar"))


def _buildah_lines(*args: str) -> list[str]:
    result = subprocess.run(["buildah", *args], capture_output=True, text=True, check=True)
    return result.stdout.split()
