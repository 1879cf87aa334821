"""Cross-checks of a config that need the device profiles: profiles, buses, billing, load management.

Part of the composition side (with app.py and cli.py, the only modules that import ``adapters``):
pydantic checks what one config file can say by itself (gateway.config); these need to know what
a device is (its profile). Every problem names its TOML key path and the reason.
"""

from __future__ import annotations

from adapters.modbus.layout import DeviceMap
from adapters.modbus.profile import Profile, load_profile, profile_names
from adapters.modbus.transport import TcpTransport, Transport, line_key, serial_transport
from gateway.config import GatewayConfig
from gateway.config_devices import ChargerConfig, DeviceConfig
from gateway.domain.errors import ConfigError


def check_profiles(config: GatewayConfig) -> list[tuple[str, str]]:
    """Problems with the devices' profiles (missing, wrong kind, too few sockets), by key path."""
    problems: list[tuple[str, str]] = []
    devices: list[tuple[str, DeviceConfig, str]] = [
        (f"chargers[{i}]", c, "charger") for i, c in enumerate(config.chargers)
    ]
    devices += [(f"meters[{i}]", m, "meter") for i, m in enumerate(config.meters)]
    usable: list[tuple[str, DeviceConfig, Profile]] = []
    for path, device, kind in devices:
        try:
            profile = load_profile(device.profile)
        except ConfigError as exc:
            if exc.problems and exc.problems[0][1].startswith("no profile named"):
                known = ", ".join(profile_names())
                problems.append((f"{path}.profile", f"no profile named {device.profile!r} (known: {known})"))
            else:
                problems.extend((f"{path}.profile ({key})", reason) for key, reason in exc.problems)
            continue
        if profile.kind != kind:
            problems.append((f"{path}.profile", f"{device.profile!r} is a {profile.kind} profile, not a {kind}"))
        if isinstance(device, ChargerConfig) and len(device.connectors) > profile.sockets:
            reason = f"{device.profile!r} has {profile.sockets} socket(s), not {len(device.connectors)}"
            problems.append((f"{path}.connectors", reason))
            continue
        usable.append((path, device, profile))
    return problems + check_lines(usable)


def check_billing(config: GatewayConfig) -> list[tuple[str, str]]:
    """Modbus connectors with no billing register: their charger's profile has no lifetime energy
    register (``energy_wh``; a per-session counter is never billed) and no meter is assigned to
    them. Every session there would reach the CSMS as 0 Wh, which no site wants, so the command
    line refuses such a config (check-config, run, demo). Gateway.build does not: the gateway
    itself copes (0 Wh, one warning), and tests drive a lone session-counter charger through it.
    Native OCPP chargers report their own register and are not checked. Profiles that do not load
    are left to check_profiles."""
    metered = {meter.connector for meter in config.meters}
    problems: list[tuple[str, str]] = []
    for i, charger in enumerate(config.chargers):
        try:
            profile = load_profile(charger.profile)
        except ConfigError:
            continue
        if profile.kind != "charger" or "energy_wh" in profile.values:
            continue
        counter = "only a per-session counter" if "session_energy_wh" in profile.values else "none"
        for j, number in enumerate(charger.connectors):
            if number not in metered:
                reason = (
                    f"connector {number} has no billing register: {charger.profile!r} has no lifetime energy "
                    f"register ({counter}), so every session would be billed as 0 Wh; assign a meter to it "
                    f"([[meters]] with connector = {number})"
                )
                problems.append((f"chargers[{i}].connectors[{j}]", reason))
    return problems


def transport_for(device: DeviceConfig, profile: Profile) -> Transport:
    """How to reach ``device``: its config keys win, then the profile's serial defaults, then 9600 8N1."""
    if device.serial is None:
        assert device.host is not None  # config validation guarantees one of host and serial
        return TcpTransport(device.host, device.port, device.framer)
    return serial_transport(
        device.serial,
        profile.modbus.serial,
        baudrate=device.baudrate,
        parity=device.parity,
        stopbits=device.stopbits,
        bytesize=device.bytesize,
    )


def check_lines(devices: list[tuple[str, DeviceConfig, Profile]]) -> list[tuple[str, str]]:
    """Devices on one line (serial port or TCP endpoint) need the same serial settings and their own unit ids."""
    problems: list[tuple[str, str]] = []
    first_on_line: dict[str, tuple[str, Transport]] = {}
    unit_users: dict[tuple[str, int], str] = {}
    for path, device, profile in devices:
        transport = transport_for(device, profile)
        key = line_key(transport)
        other, seen = first_on_line.setdefault(key, (path, transport))
        if seen != transport:
            same = "devices on one bus need the same baudrate, parity, stopbits, bytesize"
            problems.append((f"{path}.serial", f"{other} uses this port as {seen}; {same}, not {transport}"))
            continue
        sockets = len(device.connectors) if isinstance(device, ChargerConfig) else 1
        units = DeviceMap(profile, unit_id=device.unit_id, sockets=sockets)
        for unit_id in sorted({block.unit_id for block in units.read_blocks()}):  # the unit ids it polls
            user = unit_users.setdefault((key, unit_id), path)
            if user != path:
                problems.append((f"{path}.unit_id", f"unit id {unit_id} on {transport} is already {user}'s"))
    return problems


def validate(config: GatewayConfig) -> None:
    """Cross-checks that need the profiles; raises ConfigError naming every problem."""
    problems = check_profiles(config)
    if problems:
        raise ConfigError(problems)


def check_load_management(config: GatewayConfig) -> list[tuple[str, str]]:
    """``[load_management]`` needs a grid meter that measures current on each of three phases: the
    headroom is worked out per phase, and a meter with power alone cannot say which phase is full."""
    section = config.load_management
    meter = next((m for m in config.meters if section is not None and m.name == section.grid_meter), None)
    if meter is None:
        return []  # no load management, or a grid meter that is not configured (gateway.config says so)
    try:
        profile = load_profile(meter.profile)
    except ConfigError:
        return []  # check_profiles names it
    current = profile.values.get("current_a")
    if current is None or current.phases != 3:
        measures = "no current" if current is None else f"current on {current.phases} phase(s)"
        reason = (
            f"the grid meter {meter.name!r} ({meter.profile}) measures {measures}; load management needs "
            "the current on each of three phases"
        )
        return [("load_management.grid_meter", reason)]
    return []


def load_management_notes(config: GatewayConfig) -> list[str]:
    """What an installer should know about each charger under load management: which cannot take a
    share, and what each does when the gateway stops (its watchdog), one line per charger."""
    if config.load_management is None:
        return []
    notes: list[str] = []
    for charger in config.chargers:
        try:
            profile = load_profile(charger.profile)
        except ConfigError:
            continue
        if profile.writes.current_limit is None:
            notes.append(
                f"{charger.name}: {charger.profile} cannot be told a current: it takes no share, and what it "
                "draws counts as building load"
            )
            continue
        dog = profile.watchdog
        if dog is None or dog.timeout_s is None:
            notes.append(
                f"{charger.name}: {charger.profile} has no watchdog the gateway feeds: if the gateway stops, it "
                "keeps its last current limit and no longer follows the building load; set a fail-safe current "
                "in the charger's own setup if it has one"
            )
        else:
            safe = "stops charging" if not dog.safe_current_a else f"falls back to {dog.safe_current_a:g} A"
            notes.append(f"{charger.name}: if the gateway stops, {safe} after {dog.timeout_s:g} s (its watchdog)")
    for charger in config.ocpp_chargers:
        if charger.mode == "merged":
            notes.append(
                f"{charger.identity}: OCPP charger: if the gateway stops, it keeps the gateway's last charging "
                "profile until its session ends"
            )
    return notes
