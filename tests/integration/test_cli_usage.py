"""The command line's rough edges (issue 15), in a subprocess where the behaviour is the process's:
exit codes, a closed stdout, another working directory, a package installed without the checkout."""

from __future__ import annotations

import argparse
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

from gateway.cli import build_parser
from gateway.closed_stdout import EXIT_CLOSED_STDOUT
from tests.fixtures.net import free_port
from tests.integration.test_cli import CLI, ROOT, run_cli, shipped_with, without_load_management, write_config

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_a_config_saved_as_latin1_is_a_clear_message_and_exit_2(tmp_path: Path, command: str) -> None:
    path = tmp_path / "site.toml"
    path.write_bytes(shipped_with({'name = "Demo car park"': 'name = "Café"'}).encode("latin-1"))
    result = run_cli(command, "--config", str(path), timeout=30)
    assert result.returncode == 2  # not 1: the systemd unit would restart it every 5 s
    assert f"{path}: not UTF-8 text: byte 0xe9 at line 7, column 12; save the file as UTF-8" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_bytes(b"\xef\xbb\xbf" + (ROOT / "config.toml").read_bytes())
    result = run_cli("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert f"{path}: OK" in result.stdout


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_a_connector_that_would_bill_0_wh_is_refused_with_the_fix(tmp_path: Path, command: str) -> None:
    """An ABB Terra AC counts energy per session only: without a meter every session is 0 Wh."""
    path = write_config(tmp_path / "site.toml", shipped_with({'profile = "bender-cc613"': 'profile = "abb-terra-ac"'}))
    result = run_cli(command, "--config", str(path), timeout=30)
    assert result.returncode == 2, result.stdout
    assert "chargers[0].connectors[0]: connector 1 has no billing register: 'abb-terra-ac'" in result.stderr
    assert "assign a meter to it ([[meters]] with connector = 1)" in result.stderr
    # the fix: the site meter becomes connector 1's billing meter; it then no longer measures the
    # whole site, so the demo site's load management (which reads it as the grid meter) goes too
    metered = shipped_with({'profile = "bender-cc613"': 'profile = "abb-terra-ac"', "connector = 0 ": "connector = 1 "})
    fixed = run_cli("check-config", str(write_config(tmp_path / "metered.toml", without_load_management(metered))))
    assert fixed.returncode == 0, fixed.stderr


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout == f"ocpp-gateway {version('ocpp-gateway')}\n"


def test_check_config_takes_the_file_as_every_other_command_does() -> None:
    result = run_cli("check-config", "--config", "config.toml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("config.toml: OK\n")
    assert run_cli("check-config", "config.toml", "--config", "config.toml").returncode == 0
    both = run_cli("check-config", "config.toml", "--config", "other.toml")
    assert both.returncode == 2
    assert "two config files (config.toml and --config other.toml): give one" in both.stderr


def test_every_argument_says_what_it_is_for() -> None:
    def undocumented(parser: argparse.ArgumentParser) -> Iterator[str]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    if not choice.help:
                        yield f"{parser.prog} {choice.dest}"
                for sub in action.choices.values():
                    yield from undocumented(sub)
            if not action.help:
                yield f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"

    assert list(undocumented(build_parser())) == []


class _StatusPage(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"site": {"id": "fake"}}).encode()
        self.send_response(200 if self.path == "/api/status" else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def status_page() -> Iterator[int]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _StatusPage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("form", ["127.0.0.1:{port}", "http://127.0.0.1:{port}/", "localhost:{port}"])
def test_status_url_may_leave_out_http(tmp_path: Path, status_page: int, form: str) -> None:
    url = form.format(port=status_page)
    result = run_cli("status", "--config", str(tmp_path / "none.toml"), "--url", url, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"site": {"id": "fake"}}


def test_status_url_that_is_not_a_web_address_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("status", "--config", str(tmp_path / "none.toml"), "--url", "ws://127.0.0.1:8080")
    assert result.returncode == 2
    assert "argument --url: expected HOST:PORT or http://HOST:PORT, got 'ws://127.0.0.1:8080'" in result.stderr


def run_into_closed_pipe(args: list[str]) -> subprocess.CompletedProcess[str]:
    """``args | head`` once head has gone: the read end of stdout is closed before anything is written."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(args, stdout=write, stderr=subprocess.PIPE, text=True, timeout=60, cwd=ROOT, env=ENV)
    finally:
        os.close(write)


def test_probe_into_a_closed_pipe_ends_quietly() -> None:
    result = run_into_closed_pipe([*CLI, "probe", "--tcp", f"127.0.0.1:{free_port()}", "--timeout", "0.1"])
    assert result.stderr == ""  # no BrokenPipeError traceback, no "Exception ignored"
    assert result.returncode == EXIT_CLOSED_STDOUT  # as a shell reports a tool that SIGPIPE ended


def test_a_closed_pipe_inside_a_task_group_ends_quietly_too() -> None:
    """The demo's live table writes from a task: the BrokenPipeError arrives in an ExceptionGroup."""
    script = (
        "import asyncio, sys\n"
        "from gateway.closed_stdout import quiet_on_closed_stdout\n"
        "async def table():\n"
        "    while True:\n"
        "        print('row'); sys.stdout.flush(); await asyncio.sleep(0)\n"
        "async def site():\n"
        "    async with asyncio.TaskGroup() as tasks:\n"
        "        tasks.create_task(table()); tasks.create_task(asyncio.sleep(60))\n"
        "sys.exit(quiet_on_closed_stdout(lambda: asyncio.run(site()) or 0))\n"
    )
    result = run_into_closed_pipe([sys.executable, "-c", script])
    assert result.stderr == ""
    assert result.returncode == EXIT_CLOSED_STDOUT


def test_demo_after_a_plain_pip_install_finds_its_site_from_any_directory(tmp_path: Path) -> None:
    """Installed as the Dockerfile does (pyproject, README and the two packages, no config.toml),
    run elsewhere: the demo simulates the site installed with the package. An invalid --csms-url
    ends it right after the config was loaded and checked, before any port is taken."""
    source, target, elsewhere = tmp_path / "source", tmp_path / "site-packages", tmp_path / "elsewhere"
    for name in ("pyproject.toml", "README.md"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    for package in ("gateway", "adapters"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(source)]
    installed = subprocess.run(pip, capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-2000:]
    elsewhere.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo", "--csms-url", "http://not-a-websocket"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=elsewhere,
        env={**os.environ, "PYTHONPATH": str(target)},
    )
    shipped = target / "gateway" / "demo_site.toml"
    assert f"demo: no config.toml here; simulating the demo site shipped in {shipped}" in result.stderr
    assert "problem(s)" not in result.stderr  # the shipped site passed check-config's checks
    assert "demo: upstream.url: must be a ws:// or wss:// URL" in result.stderr
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_demo_prefers_a_config_toml_in_the_working_directory(tmp_path: Path) -> None:
    write_config(tmp_path / "config.toml", '[site]\nid = "mine"\n')
    result = subprocess.run([*CLI, "demo"], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=ENV)
    assert result.returncode == 2
    assert "config.toml: 1 problem(s)\n  upstream: required key is missing" in result.stderr
    assert "shipped" not in result.stderr
