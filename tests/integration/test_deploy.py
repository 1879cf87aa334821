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


def test_the_dockerfile_runs_as_a_user_has_a_health_check_and_copies_what_exists() -> None:
    """No Docker daemon here to build it: check what a linter would (hadolint's main rules) and
    that every path it copies is in the repository."""
    lines = [line.strip() for line in (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8").splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    assert instructions[0].startswith("FROM python:3.11-slim")
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert any(line.startswith("HEALTHCHECK") for line in instructions)
    assert not any(line.startswith("ADD ") for line in instructions)  # COPY, not ADD (DL3020)
    for line in instructions:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the repository"
    compose = (ROOT / "deploy" / "docker-compose.yml").read_text(encoding="utf-8")
    assert "dockerfile: deploy/Dockerfile" in compose and "/var/lib/ocpp-gateway" in compose


HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")


@pytest.mark.skipif(not Path(HADOLINT).exists(), reason="hadolint is not installed (the test extra has it on x86_64)")
def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    result = subprocess.run(
        [HADOLINT, "--no-color", str(ROOT / "deploy" / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_the_container_health_check_asks_healthz_where_the_status_page_listens() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    assert "http://127.0.0.1:8080/healthz" in dockerfile and "EXPOSE 8080 9100" in dockerfile
    compose = (ROOT / "deploy" / "docker-compose.yml").read_text(encoding="utf-8")
    assert '"8080:8080"' in compose
