"""Command line: ``ocpp-gateway run | check-config | status | sessions | demo | probe | reset-register``.

A user's mistake (bad config, busy port, missing file) ends with a clear message and exit code 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.cli_args import (
    DEFAULT_CONFIG,
    check_combinations,
    gateway_version,
    host_port,
    site_to_simulate,
    status_page_url,
    unit_id,
)
from gateway.cli_sessions import add_parser as add_sessions_parser
from gateway.closed_stdout import quiet_on_closed_stdout
from gateway.config import GatewayConfig, load_config
from gateway.config_devices import BAUDRATES
from gateway.config_summary import summary
from gateway.domain.errors import ConfigError, DeviceUnavailable
from gateway.log_format import formatter
from gateway.status_text import render

if TYPE_CHECKING:
    from adapters.modbus.profile import Profile
    from adapters.modbus.transport import Transport

EXIT_USAGE = 2
DEFAULT_STATUS_URL = "http://127.0.0.1:8080"


def _setup_logging(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])
    # Libraries that log whole frames (OCPP id tags) or chatter per poll stay at WARNING.
    for noisy in ("ocpp", "websockets", "amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # pymodbus warns on every failed connect, once per poll: the Site says it once, with the reason.
    logging.getLogger("pymodbus").setLevel(logging.DEBUG if level == "debug" else logging.CRITICAL)


def _print_problems(source: str, problems: list[tuple[str, str]]) -> None:
    print(f"{source}: {len(problems)} problem(s)", file=sys.stderr)
    for key, reason in problems:
        print(f"  {key}: {reason}", file=sys.stderr)


def load_checked(path: Path) -> GatewayConfig:
    """Load a config and check its profiles and billing registers; raises ConfigError with every problem."""
    from gateway.config_checks import check_billing, check_load_management, check_profiles

    config = load_config(path)
    problems = check_profiles(config) + check_billing(config) + check_load_management(config)
    if problems:
        raise ConfigError(problems)
    return config


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_checked(args.config)
    except ConfigError as exc:
        _print_problems(str(args.config), exc.problems)
        return EXIT_USAGE
    print(f"{args.config}: OK")
    print(summary(config))
    return 0


async def _until_stopped(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` until it ends or SIGTERM arrives (``systemctl stop``, ``docker stop``), which
    ends it as Ctrl-C does: cancelled, so it shuts down cleanly (open sessions stopped as Reboot,
    not PowerLoss, at the next start) and the process exits 0."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.app import Gateway

    _setup_logging(args.log_level, args.log_format)
    try:
        gateway = Gateway.build(load_checked(args.config))
    except ConfigError as exc:
        _print_problems(str(args.config), exc.problems)
        return EXIT_USAGE
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_until_stopped(gateway.run()))
    except ConfigError as exc:  # a port in use, a certificate that will not load
        _print_problems(str(args.config), exc.problems)
        return EXIT_USAGE
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import DemoError, run_demo

    _setup_logging(args.log_level)
    with site_to_simulate(args.config) as (path, shipped):
        if shipped:  # no config.toml here: say where the site comes from (a start for the user's own)
            print(f"demo: no config.toml here; simulating the demo site shipped in {path}", file=sys.stderr)
        try:
            config = load_checked(path)
            with contextlib.suppress(KeyboardInterrupt):
                demo = run_demo(
                    config,
                    csms_url=args.csms_url,
                    mqtt=args.mqtt,
                    duration_s=args.duration,
                    ocpp_version=args.ocpp_version,
                )
                asyncio.run(demo)
        except ConfigError as exc:
            _print_problems(str(path), exc.problems)
            return EXIT_USAGE
        except DemoError as exc:
            print(f"demo: {exc}", file=sys.stderr)
            return EXIT_USAGE
    return 0


def _probe_transports(args: argparse.Namespace) -> Callable[[Profile], Transport]:
    """The transport each profile is tried on: what the user gave, else the profile's serial defaults."""
    from adapters.modbus.transport import TcpTransport, serial_transport

    if args.tcp is not None:
        tcp = TcpTransport(args.tcp[0], args.tcp[1], "rtu" if args.framer == "rtu" else "tcp")
        return lambda _profile: tcp

    def serial(profile: Profile) -> Transport:
        return serial_transport(
            args.serial,
            profile.modbus.serial,
            baudrate=args.baud,
            parity=args.parity,
            stopbits=args.stopbits,
            bytesize=args.bytesize,
        )

    return serial


def cmd_probe(args: argparse.Namespace) -> int:
    from adapters.modbus.probe import config_snippet, describe_transport, describe_values, probe
    from adapters.modbus.profile import load_profile, profile_names

    _setup_logging(args.log_level)
    profiles = []
    for name in args.profile or profile_names():
        try:
            profiles.append(load_profile(name))
        except ConfigError as exc:
            _print_problems(f"profile {name}", exc.problems)
            return EXIT_USAGE
    transport_for = _probe_transports(args)
    where = args.serial if args.tcp is None else describe_transport(transport_for(profiles[0]))
    units = f"unit {args.unit}" if args.unit is not None else "each profile's unit id"
    print(f"probe {where}: {len(profiles)} profile(s) at {units}, {args.timeout:g} s per request")
    try:
        report = asyncio.run(probe(profiles, transport_for, unit_id=args.unit, timeout_s=args.timeout))
    except DeviceUnavailable as exc:
        print(f"probe: {where}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for found in report.found:
        result, profile = found.result, found.result.profile
        print(f"\nfits: {profile.id} ({profile.vendor} {profile.model}, {profile.kind}) at unit {result.unit_id}")
        print(f"  on        {describe_transport(found.transport)}")
        more = f" (and {len(result.evidence) - 3} more)" if len(result.evidence) > 3 else ""
        print(f"  because   {'; '.join(result.evidence[:3])}{more}")
        print(f"  reads     {describe_values(result)}")
        print("  paste into config.toml:\n")
        print("\n".join(f"    {line}" for line in config_snippet(found).splitlines()))
    if len(report.found) > 1:
        print(f"\n{len(report.found)} profiles fit (related devices share registers): pick the one whose")
        print("values look right, or the one named on the device's label.")
    print("\nno profile fits. Tried:" if not report.found else "\ntried:")
    width = max(len(a.profile_id) for a in report.attempts)
    for attempt in report.attempts:
        on = f" on {attempt.transport}" if args.tcp is None else ""
        print(f"  {attempt.profile_id:<{width}}  unit {attempt.unit_id:<3}{on}  {attempt.outcome}")
    if not report.found:
        print("Check the unit id (--unit), the serial settings (--baud, --parity) and the wiring.")
        return 1
    return 0


def status_url(config: GatewayConfig) -> str:
    """Where this box's status page answers (a wildcard bind address is reached on loopback)."""
    page = config.status_page
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(page.host, page.host)
    return f"http://{f'[{host}]' if ':' in host else host}:{page.port}"


def fetch_status(url: str, credentials: tuple[str, str] | None, timeout_s: float = 5.0) -> dict[str, Any]:
    """GET ``<url>/api/status``; raises StatusUnavailable with one line saying why not."""
    request = urllib.request.Request(url.rstrip("/") + "/api/status", headers={"Accept": "application/json"})
    if credentials is not None:
        token = base64.b64encode(":".join(credentials).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            return dict(json.load(answer))
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise StatusUnavailable(f"{url} refused the user name and password ([status_page] in the config)") from None
        raise StatusUnavailable(f"{url} answered HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StatusUnavailable(f"cannot reach the status page at {url}: {reason}; is the gateway running?") from None
    except ValueError:
        raise StatusUnavailable(f"{url}/api/status did not answer with JSON: is that the gateway?") from None


class StatusUnavailable(Exception):
    """The running gateway's status could not be read; the message says why, in one line."""


def cmd_status(args: argparse.Namespace) -> int:
    credentials, url = None, args.url or DEFAULT_STATUS_URL
    if args.config.exists():  # without one, ask the default address
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            _print_problems(str(args.config), exc.problems)
            return EXIT_USAGE
        url = args.url or status_url(config)
        page = config.status_page
        if page.username and page.password is not None and args.url is None:  # never to another address
            credentials = (page.username, page.password.get_secret_value())
    try:
        picture = fetch_status(url, credentials)
    except StatusUnavailable as exc:
        print(f"status: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(picture, indent=2, ensure_ascii=False) if args.json else render(picture))
    return 0


def cmd_reset_register(args: argparse.Namespace) -> int:
    from gateway.maintenance import NoSuchRegister, register_name, reset_register

    try:
        config = load_config(args.config)
        where = register_name(config, args.connector, args.meter)
    except ConfigError as exc:
        _print_problems(str(args.config), exc.problems)
        return EXIT_USAGE
    except NoSuchRegister as exc:
        print(f"reset-register: {exc}", file=sys.stderr)
        return EXIT_USAGE
    url = status_url(config)
    if _answers(url):
        print(f"reset-register: the gateway is running (it answers at {url}): stop it first", file=sys.stderr)
        return 1
    print(reset_register(config, where))
    return 0


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url + "/healthz", timeout=1).close()
    except urllib.error.HTTPError:
        return True  # it answered (503 while starting)
    except (urllib.error.URLError, OSError):
        return False
    return True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ocpp-gateway",
        description="One OCPP 1.6J charge point for a site of Modbus chargers and meters, with MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {gateway_version()}")
    sub = parser.add_subparsers(dest="command", required=True, help="what to do (COMMAND -h: its options)")
    levels = ["debug", "info", "warning", "error"]

    run = sub.add_parser("run", help="run the gateway on a config file")
    run.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="config file (default: config.toml)")
    run.add_argument("--log-level", default="info", choices=levels, help="how much to log (default: info)")
    run.add_argument("--log-format", default="text", choices=["text", "json"], help="json: one JSON object per line")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a config file and print what it describes")
    check.add_argument("file", type=Path, nargs="?", help="config file (default: config.toml)")
    check.add_argument("--config", type=Path, help="the same, as the other commands take it")
    check.set_defaults(func=cmd_check_config)

    status = sub.add_parser("status", help="show the running gateway's site: connectors, devices, CSMS, MQTT")
    status.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="its config (default: config.toml)")
    status.add_argument(
        "--url",
        type=status_page_url,
        metavar="[http://]HOST:PORT",
        help="the status page to ask (default: from the config, http://127.0.0.1:8080)",
    )
    status.add_argument("--json", action="store_true", help="print /api/status as it came")
    status.set_defaults(func=cmd_status)

    add_sessions_parser(sub)

    demo = sub.add_parser("demo", help="run a simulated site: device simulators, a CSMS, a broker and the gateway")
    shipped = "default: config.toml, else the demo site installed with the package"
    demo.add_argument("--config", type=Path, help=f"site to simulate ({shipped})")
    demo.add_argument("--csms-url", help="use this CSMS instead of the built-in one (ws://host:port/path)")
    demo.add_argument("--mqtt", metavar="HOST:PORT", help="use this MQTT broker instead of the configured one")
    demo.add_argument(
        "--ocpp-version",
        choices=("1.6", "2.0.1"),
        help="speak this OCPP version upstream (and the built-in CSMS with it); default: the config's",
    )
    demo.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    demo.add_argument("--log-level", default="warning", choices=levels, help="how much to log (default: warning)")
    demo.set_defaults(func=cmd_demo)

    reset = sub.add_parser(
        "reset-register", help="after a meter swap: forget the last good register of a connector or meter"
    )
    reset.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="its config (default: config.toml)")
    which = reset.add_mutually_exclusive_group(required=True)
    which.add_argument("--connector", type=int, metavar="N", help="the connector whose billing register was reset")
    which.add_argument("--meter", metavar="NAME", help="the [[meters]] name of a meter that was swapped")
    reset.set_defaults(func=cmd_reset_register)

    probe = sub.add_parser(
        "probe", help="find which profile fits the device at an address, and print a config block for it"
    )
    where = probe.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", metavar="HOST[:PORT]", type=host_port, help="a Modbus TCP device (port 502)")
    where.add_argument("--serial", metavar="DEV", help="a serial port, e.g. /dev/ttyUSB0 (Modbus RTU)")
    probe.add_argument("--framer", choices=["tcp", "rtu"], default="tcp", help="rtu: RTU over TCP (serial gateway)")
    probe.add_argument("--baud", type=int, choices=BAUDRATES, metavar="N", help="default: each profile's usual rate")
    probe.add_argument("--parity", choices=["N", "E", "O"], help="default: each profile's usual parity")
    probe.add_argument("--stopbits", type=int, choices=[1, 2], help="default: each profile's usual stop bits")
    probe.add_argument("--bytesize", type=int, choices=[7, 8], help="default: each profile's usual data bits")
    probe.add_argument("--unit", type=unit_id, metavar="N", help="0..255 (default: each profile's unit id)")
    probe.add_argument("--profile", action="append", metavar="ID", help="try only this profile (repeatable)")
    probe.add_argument("--timeout", type=float, default=0.5, help="seconds to wait for each answer (default 0.5)")
    probe.add_argument("--log-level", default="warning", choices=levels, help="how much to log (default: warning)")
    probe.set_defaults(func=cmd_probe)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_combinations(parser, args)
    return quiet_on_closed_stdout(lambda: int(args.func(args)))


if __name__ == "__main__":
    sys.exit(main())
