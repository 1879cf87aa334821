"""``ocpp-gateway reset-register``: what an installer does after swapping or resetting a meter.

A billing register that reads below its last good value (a new meter starts near 0) is refused
for billing until it is back above it, and the last good value survives restarts. When the meter
was really replaced, that never happens: this forgets the kept value, so the next reading is
taken as it comes. The gateway must be stopped (it keeps its own view and writes it back).
"""

from __future__ import annotations

from pathlib import Path

from adapters.storage.settings import JsonSettingsStore
from gateway.config import GatewayConfig
from gateway.domain.model import iso_utc
from gateway.services.billing_registers import forget_register


class NoSuchRegister(ValueError):
    """The config has no such connector or meter."""


def register_name(config: GatewayConfig, connector: int | None, meter: str | None) -> str:
    """The billing source as the gateway names it (``connector 3``, ``meter site-meter``)."""
    if meter is not None:
        names = [m.name for m in config.meters]
        if meter not in names:
            raise NoSuchRegister(f"no meter {meter!r} in the config (meters: {', '.join(names) or 'none'})")
        return f"meter {meter}"
    numbers = sorted(
        [n for c in config.chargers for n in c.connectors] + [n for c in config.ocpp_chargers for n in c.connectors]
    )
    if connector not in numbers:
        raise NoSuchRegister(f"no connector {connector} in the config (connectors: {numbers})")
    return f"connector {connector}"


def reset_register(config: GatewayConfig, where: str) -> str:
    """Forget the kept register of ``where``; returns what to tell the installer."""
    settings = JsonSettingsStore(Path(config.site.state_dir) / "settings.json")
    forgotten = forget_register(settings, where)
    if forgotten is None:
        return f"{where}: no register kept; nothing to reset"
    return (
        f"{where}: forgot the last good register ({forgotten.energy_wh:,} Wh, read {iso_utc(forgotten.read_at)}); "
        "the next reading is taken as it comes. Start the gateway again."
    )
