"""What the Site's collaborators may use of it: its state and the few steps that keep it whole.

The Site (``site.py``) applies what the devices say; three collaborators each own one door into
it: ``SiteCommands`` (what the back office, MQTT and the page may ask), ``NativeChargers`` (what
chargers that speak OCPP themselves say, and the commands relayed to them) and
``SecurityEvents`` (the one way security events are told). Each keeps its own state and reaches
the Site's through this protocol, so it is plain which state is whose and none of them imports
the Site (the Site builds them and is the one implementation).
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from gateway.domain.events import Event
from gateway.domain.model import Connector, Fault, Reading
from gateway.domain.ports import Clock, SettingsStore
from gateway.domain.transactions import Effect
from gateway.services.batteries import Batteries
from gateway.services.billing_registers import BillingRegisters
from gateway.services.sessions import Sessions
from gateway.services.shared_load import SharedLoad


class SiteCore(Protocol):
    clock: Clock
    connectors: dict[int, Connector]
    sessions: Sessions
    settings: SettingsStore
    batteries: Batteries
    load: SharedLoad
    registers: BillingRegisters

    @property
    def upstream_connectors(self) -> dict[int, Connector]:
        """The connectors of the site's one charge point (not those of passthrough chargers)."""

    def emit(self, event: Event) -> None:
        """Tell every subscriber."""

    def update_status(self, connector: Connector, at: datetime) -> None:
        """Derive the connector's status again (and tell it when it changed)."""

    def set_online(self, device: str, online: bool, reason: str, at: datetime) -> None:
        """The device answers, or stopped answering (told once per change)."""

    def guard_register(self, where: str, reading: Reading, *, quiet: bool = False) -> tuple[Reading, Fault | None]:
        """``reading`` with its energy register checked (a register gone backwards or jumped is a fault)."""

    def running_connector(self, local_ref: str) -> Connector | None:
        """The connector whose running session is ``local_ref``."""

    def session_effect(self, effect: Effect) -> None:
        """A session started or stopped: the connector's view follows, then the subscribers are told."""
