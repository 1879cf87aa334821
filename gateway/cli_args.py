"""What the command line accepts: argument types and the checks across arguments.

Each turns what a user typed into a value, or into an argparse usage error (exit 2) that says what
was expected, so a typo never reaches the code that would fail on it with a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from datetime import UTC, date, datetime, tzinfo
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import gateway

DEFAULT_CONFIG = Path("config.toml")
DEMO_SITE = "demo_site.toml"  # in the package: a copy of the checkout's config.toml (a test keeps them equal)


def gateway_version() -> str:
    """The installed distribution's version (what pip says), else the package's own."""
    try:
        return version("ocpp-gateway")
    except PackageNotFoundError:  # run from a checkout on PYTHONPATH, never installed
        return gateway.__version__


def host_port(text: str) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT`` or ``[IPv6]:PORT``; the port defaults to 502."""
    host, port = text, "502"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or port
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST or HOST:PORT, got {text!r}")
    return host, int(port)


def unit_id(text: str) -> int:
    if not text.isdigit() or int(text) > 255:
        raise argparse.ArgumentTypeError(f"a unit id is 0..255, not {text!r}")
    return int(text)


def status_page_url(text: str) -> str:
    """A status page address: ``http(s)://HOST[:PORT]`` as given, or ``HOST[:PORT]`` with http://
    added. urllib knows no default scheme: it reads ``localhost:8080`` as the scheme "localhost"."""
    url = text.strip() if "://" in text else f"http://{text.strip()}"
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 -- raises ValueError for a port that is not 0..65535
    except ValueError:
        parts = parts._replace(netloc="")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT or http://HOST:PORT, got {text!r}")
    return url.rstrip("/")


def moment(text: str) -> date | datetime:
    """``--since``/``--until``: a date (``2026-03-01``) or an ISO time (``2026-03-01T08:00``, with
    or without a zone); a value without a zone is read in ``--tz`` later."""
    for parse in (date.fromisoformat, datetime.fromisoformat):
        with contextlib.suppress(ValueError):
            return parse(text.strip())
    raise argparse.ArgumentTypeError(f"expected a date (2026-03-01) or an ISO time (2026-03-01T08:00), got {text!r}")


def year_month(text: str) -> date:
    """``--month YYYY-MM``: its first day."""
    if len(text.strip()) == 7:
        with contextlib.suppress(ValueError):
            return date.fromisoformat(f"{text.strip()}-01")
    raise argparse.ArgumentTypeError(f"expected a month as YYYY-MM (2026-03), got {text!r}")


def time_zone(text: str) -> tzinfo:
    """``--tz``: an IANA zone name (``Europe/Berlin``) or ``UTC``."""
    if text.strip().upper() in ("UTC", "Z"):
        return UTC
    try:
        return ZoneInfo(text.strip())
    except (ValueError, OSError, ZoneInfoNotFoundError):
        raise argparse.ArgumentTypeError(f"unknown time zone {text!r} (e.g. Europe/Berlin or UTC)") from None


def connector_number(text: str) -> int:
    if not text.strip().isdigit() or len(text.strip()) > 6:
        raise argparse.ArgumentTypeError(f"a connector is a number 0..999999, not {text!r}")
    return int(text)


def check_combinations(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What argparse cannot say by itself; ends with a usage error (exit 2) on a wrong mix."""
    if args.command == "check-config":  # FILE, as before, or --config FILE, as every other command takes
        if args.file is not None and args.config is not None and args.file != args.config:
            parser.error(f"check-config: two config files ({args.file} and --config {args.config}): give one")
        args.config = args.config or args.file or DEFAULT_CONFIG
    if args.command == "probe":
        if args.tcp is not None and any(v is not None for v in (args.baud, args.parity, args.stopbits, args.bytesize)):
            parser.error("--baud, --parity, --stopbits and --bytesize are for --serial")
        if args.serial is not None and args.framer == "rtu":
            parser.error("--framer is for --tcp (a serial port always speaks RTU)")
    if args.command == "sessions" and args.month is not None and (args.since or args.until):
        parser.error("--month is a shortcut for --since and --until: give one or the other")


@contextlib.contextmanager
def site_to_simulate(given: Path | None) -> Iterator[tuple[Path, bool]]:
    """The config ``demo`` simulates, and whether it is the shipped one: ``--config`` if given,
    else ./config.toml (the checkout's demo site, or the user's own site), else the demo site
    installed with the package, so ``pip install`` then ``ocpp-gateway demo`` works anywhere."""
    if given is not None or DEFAULT_CONFIG.exists():
        yield (given or DEFAULT_CONFIG), False
        return
    with resources.as_file(resources.files("gateway").joinpath(DEMO_SITE)) as shipped:
        yield shipped, True
