"""The deployment files are valid where the tools to check them exist on this machine."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
INSTALLED = "/opt/ocpp-gateway/venv/bin/ocpp-gateway"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = (ROOT / "deploy" / "ocpp-gateway.service").read_text(encoding="utf-8")
    assert INSTALLED in unit
    # verify checks that ExecStart exists: point it at this venv's console script
    here = tmp_path / "ocpp-gateway.service"
    here.write_text(unit.replace(INSTALLED, str(Path(sys.executable).parent / "ocpp-gateway")), encoding="utf-8")
    result = subprocess.run(
        ["systemd-analyze", "verify", str(here)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ocpp-gateway.service" not in result.stdout + result.stderr  # no warning about our unit
