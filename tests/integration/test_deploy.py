"""The deployment files are valid where the tools to check them exist on this machine."""

from __future__ import annotations

import ctypes
import errno
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import distribution
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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
    assert '"127.0.0.1:8080:8080"' in compose


def _unit_here(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this venv's console script (the tools check it exists)."""
    unit = (ROOT / "deploy" / "ocpp-gateway.service").read_text(encoding="utf-8")
    here = tmp_path / "ocpp-gateway.service"
    here.write_text(unit.replace(INSTALLED, str(Path(sys.executable).parent / "ocpp-gateway")), encoding="utf-8")
    return here


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_security_rates_the_unit_at_most_3(tmp_path: Path) -> None:
    """Without the hardening the unit was rated 6.9 MEDIUM. ``--offline`` (systemd 250 and later)
    rates the file without loading it into a running systemd."""
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(_unit_here(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0 and "offline" in result.stderr:
        pytest.skip(f"this systemd-analyze cannot rate a unit file offline: {result.stderr.strip()}")
    rating = re.search(r"Overall exposure level for ocpp-gateway\.service: (\d+\.\d+)", result.stdout)
    assert rating is not None, result.stdout + result.stderr
    assert float(rating[1]) <= 3.0, result.stdout


def test_the_unit_lets_the_service_open_usb_serial_adapters_and_keeps_its_files_private() -> None:
    """The hardening must not lock out Modbus RTU: the device ACL names the USB serial drivers, the
    group the ports belong to is joined, and /dev stays the host's (PrivateDevices=yes hides it)."""
    settings = [
        line.strip() for line in (ROOT / "deploy" / "ocpp-gateway.service").read_text(encoding="utf-8").splitlines()
    ]
    assert "DevicePolicy=closed" in settings
    assert {"DeviceAllow=char-ttyUSB rw", "DeviceAllow=char-ttyACM rw", "SupplementaryGroups=dialout"} <= set(settings)
    assert not any(line.startswith("PrivateDevices=") and line != "PrivateDevices=no" for line in settings)
    assert {"UMask=0077", "StateDirectoryMode=0700", "RestartPreventExitStatus=2"} <= set(settings)


PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1  # linux/prctl.h, Linux 6.3 and later


def _mdwe_supported() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(66, 0, 0, 0, 0) >= 0 or ctypes.get_errno() != errno.EINVAL  # PR_GET_MDWE


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not _mdwe_supported(), reason="needs Linux 6.3 or later (PR_SET_MDWE)"
)
def test_the_gateway_runs_under_memory_deny_write_execute() -> None:
    """The unit's MemoryDenyWriteExecute=yes refuses memory both writable and executable (a JIT,
    some libffi callbacks). The kernel's own switch for it (what systemd 253+ uses) is set in a
    child, which then imports every module of the gateway (their C extensions included) and runs
    ``check-config`` on the example config."""
    script = f"""
import ctypes, importlib, mmap, pkgutil, sys
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) == 0, ctypes.get_errno()
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("writable and executable memory was allowed: the switch is not on")
except PermissionError:
    pass
import adapters, gateway
for package in (gateway, adapters):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)
from gateway.cli import main
sys.exit(main(["check-config", {str(ROOT / "config.toml")!r}]))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _runtime_dependencies() -> dict[str, str]:
    """Every distribution ``pip install .`` brings in (indirect ones too), as installed here: name to version."""
    seen: dict[str, frozenset[str]] = {}
    todo = [("ocpp-gateway", frozenset[str]())]
    while todo:
        name, extras = todo.pop()
        for raw in distribution(name).requires or []:
            requirement = Requirement(raw)
            wanted = extras or {""}
            if requirement.marker and not any(requirement.marker.evaluate({"extra": e}) for e in wanted):
                continue  # (test extras, other Pythons)
            key, more = canonicalize_name(requirement.name), frozenset(requirement.extras)
            if key in seen and more <= seen[key]:
                continue
            seen[key] = seen.get(key, frozenset()) | more
            todo.append((requirement.name, more))
    return {key: distribution(key).version for key in seen}


def _constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "deploy" / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, equals, version = line.partition("==")
            assert equals and version, f"constraints.txt: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version
    return pins


def test_every_runtime_dependency_is_pinned_in_the_constraints_the_image_uses() -> None:
    pins = _constraints()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for raw in project["dependencies"]:
        requirement = Requirement(raw)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} (pyproject.toml) is not pinned in deploy/constraints.txt"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {raw!r}"
    runtime = _runtime_dependencies()
    assert sorted(set(runtime) - set(pins)) == [], "runtime dependencies missing from deploy/constraints.txt"
    assert sorted(set(pins) - set(runtime)) == [], "deploy/constraints.txt pins what the gateway does not need"
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    assert "deploy/constraints.txt" in dockerfile and "pip install -c constraints.txt ." in dockerfile


def test_compose_publishes_on_this_box_only_and_checks_the_config_before_the_gateway_starts() -> None:
    text = (ROOT / "deploy" / "docker-compose.yml").read_text(encoding="utf-8")
    services = yaml.safe_load(text)["services"]
    published = [port for service in services.values() for port in service.get("ports", [])]
    assert published and all(port.startswith("127.0.0.1:") for port in published), published
    assert '[ocpp_server] host = "0.0.0.0"' in text and '[status_page] host = "0.0.0.0"' in text
    gateway, check = services["gateway"], services["config-check"]
    # exit 2 (a config mistake) must not be restarted in a loop: the gateway is started only once
    # the same config, mounted at the same place, passed check-config in the same image
    assert gateway["depends_on"]["config-check"] == {"condition": "service_completed_successfully"}
    assert check["command"] == ["check-config", "/etc/ocpp-gateway/config.toml"]
    assert check["restart"] == "no" and check["build"] == gateway["build"]
    config_mount = "./site.toml:/etc/ocpp-gateway/config.toml:ro"
    assert check["volumes"] == [config_mount] and config_mount in gateway["volumes"]
    assert gateway["restart"] == "unless-stopped"  # back after a reboot (on-failure is not: a clean stop exits 0)


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
def test_docker_compose_accepts_the_compose_file(tmp_path: Path) -> None:
    deploy = tmp_path / "deploy"
    shutil.copytree(ROOT / "deploy", deploy)
    (deploy / "site.toml").write_text("", encoding="utf-8")
    result = subprocess.run(
        ["docker-compose", "-f", str(deploy / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
