"""The wheel holds what users need; the image recipe and shell scripts are linted.

CI cannot build the image, so its recipe is linted and read instead.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = [
    ROOT / ".ci" / "run",
    *sorted((ROOT / "scripts").iterdir()),
    *sorted(ROOT.glob("e2e/**/*.sh")),
]


def _tool(name: str) -> str:
    found = shutil.which(name) or str(Path(__file__).resolve().parent.parent / ".venv/bin" / name)
    if not Path(found).exists():
        pytest.fail(f"{name} is not installed; it comes with the test extras")
    return found


def test_dockerfile_passes_hadolint():
    result = subprocess.run(
        [_tool("hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_runs_as_non_root_and_starts_the_gateway_by_default():
    text = (ROOT / "Dockerfile").read_text()
    assert "USER 10001:10001" in text
    assert 'ENTRYPOINT ["neurelay"]' in text
    assert 'CMD ["gateway", "--config", "/etc/neurelay/gateway.yaml"]' in text
    # The final stage copies the virtualenv only: no compilers, no source tree.
    final = text.rsplit("FROM ", 1)[1]
    assert "COPY --from=build /opt/neurelay /opt/neurelay" in final
    assert "pip install" not in final


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_scripts_pass_shellcheck(script: Path):
    result = subprocess.run(
        [_tool("shellcheck"), "-x", str(script)], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_wheel_ships_py_typed_and_the_gateway_static_files(tmp_path: Path):
    # Build from a copy: an in-tree build would leave build/ and egg-info behind.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT / "neurelay", source / "neurelay", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path / "dist"),
            str(source),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "dist").glob("neurelay-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "neurelay/py.typed" in names
    assert "neurelay/gateway/static/neurelay.js" in names
