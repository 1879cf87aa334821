"""Command line: ``ocpp-gateway run | check-config | demo``.

A user's mistake (bad config, busy port, missing file) ends with a clear message and exit code 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from pathlib import Path

from gateway.config import GatewayConfig, load_config
from gateway.domain.errors import ConfigError

EXIT_USAGE = 2
DEFAULT_CONFIG = Path("config.toml")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    # Libraries that log whole frames (OCPP id tags) or chatter per poll stay at WARNING.
    for noisy in ("ocpp", "pymodbus", "websockets", "amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _print_problems(source: str, problems: list[tuple[str, str]]) -> None:
    print(f"{source}: {len(problems)} problem(s)", file=sys.stderr)
    for key, reason in problems:
        print(f"  {key}: {reason}", file=sys.stderr)


def load_checked(path: Path) -> GatewayConfig:
    """Load a config and check its profiles; raises ConfigError with every problem."""
    from gateway.app import check_profiles

    config = load_config(path)
    problems = check_profiles(config)
    if problems:
        raise ConfigError(problems)
    return config


def summary(config: GatewayConfig) -> str:
    """What the gateway will do with this config, in a few lines an installer can check."""
    up = config.upstream
    auth = "Basic auth" if up.password else "no auth"
    lines = [
        f"site       {config.site.id}" + (f" ({config.site.name})" if config.site.name else ""),
        f"upstream   {up.endpoint} as one charge point with {config.connector_count} connector(s), {auth}",
        f"mqtt       {config.mqtt.host}:{config.mqtt.port}, topics under {config.topic_prefix}/",
        "connectors",
    ]
    for charger in config.chargers:
        for socket, number in enumerate(charger.connectors, start=1):
            unit = f"unit {charger.unit_id}" if charger.unit_id is not None else "profile unit id"
            where = f"{charger.profile}, {charger.host}:{charger.port}, {unit}"
            lines.append(f"  {number:>3}  {charger.name} socket {socket}  ({where})")
    lines.append("meters")
    for meter in config.meters:
        role = {None: "MQTT only", 0: "site meter, upstream connector 0"}.get(
            meter.connector, f"billing meter of connector {meter.connector}"
        )
        lines.append(f"  {meter.name}  ({meter.profile}, {meter.host}:{meter.port}): {role}")
    if not config.meters:
        lines.append("  (none)")
    return "\n".join(lines)


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_checked(args.file)
    except ConfigError as exc:
        _print_problems(str(args.file), exc.problems)
        return EXIT_USAGE
    print(f"{args.file}: OK")
    print(summary(config))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.app import Gateway

    _setup_logging(args.log_level)
    try:
        gateway = Gateway.build(load_checked(args.config))
    except ConfigError as exc:
        _print_problems(str(args.config), exc.problems)
        return EXIT_USAGE
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(gateway.run())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import DemoError, run_demo

    _setup_logging(args.log_level)
    try:
        config = load_checked(args.config)
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run_demo(config, csms_url=args.csms_url, mqtt=args.mqtt, duration_s=args.duration))
    except ConfigError as exc:
        _print_problems(str(args.config), exc.problems)
        return EXIT_USAGE
    except DemoError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ocpp-gateway",
        description="One OCPP 1.6J charge point for a site of Modbus chargers and meters, with MQTT.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the gateway on a config file")
    run.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="config file (default: config.toml)")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a config file and print what it describes")
    check.add_argument("file", type=Path, nargs="?", default=DEFAULT_CONFIG)
    check.set_defaults(func=cmd_check_config)

    demo = sub.add_parser("demo", help="run a simulated site: device simulators, a CSMS, a broker and the gateway")
    demo.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="site to simulate (default: config.toml)")
    demo.add_argument("--csms-url", help="use this CSMS instead of the built-in one (ws://host:port/path)")
    demo.add_argument("--mqtt", metavar="HOST:PORT", help="use this MQTT broker instead of the configured one")
    demo.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    demo.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
