"""The container image recipe and the shell scripts are linted, as CI cannot build the image."""

from __future__ import annotations

import shutil
import subprocess
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
