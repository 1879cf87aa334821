"""What ``ocpp-gateway check-config`` prints: what the gateway will do with a config, in a few
lines an installer can check against the site (the CSMS's view, each connector and meter with its
transport and role, how the load is shared).

Apart from ``cli.py`` (the commands) because it is the config read back in words, and it grows
with every kind of device and every upstream version."""

from __future__ import annotations

from gateway.config import GatewayConfig
from gateway.config_devices import DeviceConfig
from gateway.services.sessions import DEFAULT_FREE_ID_TAG


def summary(config: GatewayConfig) -> str:
    """What the gateway will do with this config, in a few lines an installer can check."""
    up = config.upstream
    auth = "Basic auth" if up.password else "no auth"
    lines = [
        f"site       {config.site.id}" + (f" ({config.site.name})" if config.site.name else ""),
        f"upstream   {up.endpoint}, {auth}: {_upstream_role(config)}",
        f"mqtt       {config.mqtt.host}:{config.mqtt.port}, topics under {config.topic_prefix}/",
        *_ocpp_server_lines(config),
        "connectors",
    ]
    policies = {c.id: c for c in config.connectors}
    for charger in config.chargers:
        for socket, number in enumerate(charger.connectors, start=1):
            unit = f"unit {charger.unit_id}" if charger.unit_id is not None else "profile unit id"
            where = f"{charger.profile}, {_where(charger)}, {unit}"
            policy = policies.get(number)
            sessions = "free" if policy is None else policy.policy
            if sessions == "free":
                sessions += f" as {policy.id_tag if policy and policy.id_tag else DEFAULT_FREE_ID_TAG}"
            lines.append(f"  {number:>3}  {charger.name} socket {socket}  ({where}), sessions: {sessions}")
    lines += _ocpp_connector_lines(config)
    lines.append("meters")
    for meter in config.meters:
        role = {None: "MQTT only", 0: "site meter, upstream connector 0"}.get(
            meter.connector, f"billing meter of connector {meter.connector}"
        )
        lines.append(f"  {meter.name}  ({meter.profile}, {_where(meter)}): {role}")
    if not config.meters:
        lines.append("  (none)")
    lines += _load_lines(config)
    return "\n".join(lines)


def _upstream_role(config: GatewayConfig) -> str:
    """What the CSMS will see: the version decides the words, the site is the same."""
    count = config.connector_count
    if config.upstream.ocpp_version == "2.0.1":
        return f"OCPP 2.0.1, one charging station with {count} EVSE(s) (site connector n = EVSE n)"
    return f"OCPP 1.6J, one charge point with {count} connector(s)"


def _load_lines(config: GatewayConfig) -> list[str]:
    """How the chargers share the grid connection, and what each does if the gateway stops."""
    from gateway.config_checks import load_management_notes

    section = config.load_management
    if section is None:
        return ["load       not managed: only the CSMS's ChargePointMaxProfile and an MQTT site limit are shared"]
    lines = [
        f"load       grid meter {section.grid_meter}: fuse {section.fuse_a:g} A, margin {section.margin_a:g} A, "
        f"fallback {section.fallback_a:g} A per phase; turns of {section.rotation_min:g} min"
    ]
    priorities = sorted((c.priority, c.id) for c in config.connectors if c.priority)
    if priorities:
        lines.append("  priorities: " + ", ".join(f"connector {cid}: {p}" for p, cid in reversed(priorities)))
    lines += [f"  {note}" for note in load_management_notes(config)]
    return lines


def _ocpp_server_lines(config: GatewayConfig) -> list[str]:
    """The local OCPP server, when native chargers are configured."""
    if not config.ocpp_chargers:
        return []
    server = config.ocpp_server
    url = f"{'wss' if server.tls else 'ws'}://{server.host}:{server.port}/<identity>"
    return [f"ocpp       {url} for {len(config.ocpp_chargers)} OCPP charger(s)"]


def _ocpp_connector_lines(config: GatewayConfig) -> list[str]:
    """One line per connector of a native OCPP charger, in the style of the Modbus ones."""
    lines = []
    for charger in config.ocpp_chargers:
        auth = "Basic auth" if charger.password else "no password"
        for socket, number in enumerate(charger.connectors, start=1):
            mode = _native_role(config, charger.mode, charger.identity, number)
            lines.append(f"  {number:>3}  {charger.identity} connector {socket}  (OCPP 1.6J, {mode}, {auth})")
    return lines


def _native_role(config: GatewayConfig, mode: str, identity: str, number: int) -> str:
    """With a 2.0.1 CSMS, what a native charger's connector is there: an EVSE of the station
    (merged, its 1.6 translated) or the charger itself, speaking 1.6 under its own identity."""
    if config.upstream.ocpp_version != "2.0.1":
        return mode
    if mode == "merged":
        return f"merged: EVSE {number} of the 2.0.1 station"
    return f"passthrough: its own OCPP 1.6 link to the CSMS as {identity}"


def _where(device: DeviceConfig) -> str:
    """The device's transport as the gateway will use it (serial defaults filled in from the profile)."""
    from adapters.modbus.profile import load_profile
    from gateway.config_checks import transport_for

    return str(transport_for(device, load_profile(device.profile)))
