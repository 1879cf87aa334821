"""Commands to the Site from the back office, MQTT and the status page: start, stop, availability,
current ceilings, SoC targets, the site limit.

The Site's door for commands (``site.commands``): each command changes the Site's state and
emits what the devices and the upstream must do; none of them talks to a device itself.

Each command takes the ``source`` it came from (the adapter that translated it says which) and,
given one, is told to the subscribers as a ``CommandReceived`` with its result, for the operator's
event log. Without a source it is one of the gateway's own calls (a reset stopping every session,
a test) and is not told. Commands the Site does not carry out itself (a charging profile, a
configuration key, one relayed to a native charger) are told with ``record``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from gateway.domain.authorization import mask_id_tag
from gateway.domain.commands import Command, CommandResult, CommandSource
from gateway.domain.errors import CommandRejected
from gateway.domain.events import AvailabilityChanged, CommandReceived, CurrentCeilingChanged
from gateway.domain.transactions import AuthPolicy, EnableCharging, StopReason
from gateway.services.sessions import DEFAULT_FREE_ID_TAG
from gateway.services.site_core import SiteCore

MAX_CEILING_A = 80.0  # the highest per-phase current a Mode 3 AC connector carries


class SiteCommands:
    """What may be asked of the Site; owns the availability changes that wait for a session's end."""

    def __init__(self, site: SiteCore, native: Callable[[int], bool]) -> None:
        """``native``: whether a connector is a native charger's (only its charger starts it)."""
        self._site = site
        self._native = native
        self._availability_after_session: dict[int, bool] = {}  # ChangeAvailability that waits for a stop

    def record(
        self,
        command: Command,
        source: CommandSource | None,
        result: CommandResult,
        connector_id: int | None = None,
        **detail: Any,
    ) -> None:
        """Tell the subscribers that ``command`` came from ``source`` and ended with ``result``
        (nothing without a source). ``detail``: its key arguments, never a full id tag or a secret."""
        if source is not None:
            self._site.emit(CommandReceived(self._site.clock.now(), command, source, connector_id, result, detail))

    @contextmanager
    def _rejection_recorded(
        self, command: Command, source: CommandSource | None, connector_id: int | None, **detail: Any
    ) -> Iterator[None]:
        """A command refused with ``CommandRejected`` is recorded as rejected, with the reason."""
        try:
            yield
        except CommandRejected as exc:
            self.record(command, source, CommandResult.REJECTED, connector_id, **detail, reason=str(exc))
            raise

    def remote_start(
        self,
        connector_id: int | None,
        id_tag: str,
        authorize_first: bool = False,
        *,
        source: CommandSource | None = None,
    ) -> bool:
        """A remote start: True if accepted (the session starts when the car is plugged in; until
        then the connector is taken: Preparing)."""
        site = self._site
        natives = {cid for cid in site.connectors if self._native(cid)}  # without a connector: one of the Site's
        accepted = site.sessions.remote_start(connector_id, id_tag, authorize_first, site.clock.now(), natives)
        self._refresh_statuses()
        result = CommandResult.ACCEPTED if accepted else CommandResult.REJECTED
        self.record(Command.START, source, result, connector_id, id_tag=mask_id_tag(id_tag))
        return accepted

    def remote_stop(self, local_ref: str, *, source: CommandSource | None = None) -> bool:
        """A remote stop of the session recorded under ``local_ref``: True if it was running."""
        running = self._site.running_connector(local_ref)
        connector_id = running.connector_id if running is not None else None
        accepted = self._site.sessions.remote_stop(local_ref, self._site.clock.now())
        result = CommandResult.ACCEPTED if accepted else CommandResult.REJECTED
        self.record(Command.STOP, source, result, connector_id, session=local_ref)
        return accepted

    def _refresh_statuses(self) -> None:
        """Statuses that follow the sessions' phases, not a poll (a start waiting for its car)."""
        for connector in self._site.upstream_connectors.values():
            self._site.update_status(connector, self._site.clock.now())

    def change_availability(self, connector_id: int, available: bool, *, source: CommandSource | None = None) -> str:
        """Take a connector (0: all) out of service or back: "Accepted", "Scheduled" (a session is
        running; applied when it ends) or "Rejected" (no such connector). A connector already as
        asked is left alone (recorded as ``already`` when none changes), and a change scheduled
        before for it is dropped."""
        ours = self._site.upstream_connectors  # a passthrough charger's availability is its CSMS's business
        targets = list(ours) if connector_id == 0 else [connector_id]
        if any(cid not in ours for cid in targets):
            self.record(Command.AVAILABILITY, source, CommandResult.REJECTED, connector_id, available=available)
            return "Rejected"
        scheduled = changed = False
        for cid in targets:
            connector = self._site.connectors[cid]
            if connector.available == available:
                changed |= self._availability_after_session.pop(cid, None) is not None
            elif connector.session_active:
                self._availability_after_session[cid] = available
                scheduled = True
            else:
                self._set_available(cid, available)
                changed = True
        result = CommandResult.SCHEDULED if scheduled else CommandResult.ACCEPTED if changed else CommandResult.ALREADY
        self.record(Command.AVAILABILITY, source, result, connector_id, available=available)
        return "Scheduled" if scheduled else "Accepted"

    def _set_available(self, connector_id: int, available: bool) -> None:
        connector = self._site.connectors[connector_id]
        if connector.available == available:
            return  # nothing changes (a change scheduled for after a session that is no longer needed)
        connector.available = available
        stored = {str(cid): c.available for cid, c in self._site.connectors.items()}
        self._site.settings.save("availability", stored)
        if available:
            self._site.sessions.out_of_service.discard(connector_id)
        else:
            self._site.sessions.out_of_service.add(connector_id)
            self._site.emit(EnableCharging(connector_id, False))
        now = self._site.clock.now()
        self._site.emit(AvailabilityChanged(connector_id, available, now))
        self._site.update_status(connector, now)

    def session_stopped(self, connector_id: int) -> None:
        """A session ended on ``connector_id``: an availability change that waited for it is made now."""
        if connector_id in self._availability_after_session:
            self._set_available(connector_id, self._availability_after_session.pop(connector_id))

    def local_start(self, connector_id: int, id_tag: str | None, *, source: CommandSource | None = None) -> None:
        """Start a session on command (MQTT), as RemoteStartTransaction would: only on connectors
        with the ``remote`` policy (``free`` ones start on plug-in, ``local_list`` ones on a card),
        authorised first like a card. ``id_tag`` defaults to the connector's configured tag.
        Raises ``CommandRejected`` saying why when it cannot."""
        shown = {"id_tag": mask_id_tag(id_tag)} if id_tag else {}
        with self._rejection_recorded(Command.START, source, connector_id, **shown):
            machine = self._site.sessions.machines.get(connector_id)
            if machine is None:
                raise CommandRejected(f"no connector {connector_id}")
            if machine.policy is not AuthPolicy.REMOTE:
                policy = machine.policy.value
                raise CommandRejected(f"connector {connector_id} has the {policy} policy: only remote ones start so")
            tag = id_tag or machine.free_id_tag or DEFAULT_FREE_ID_TAG
            if not self.remote_start(connector_id, tag, authorize_first=True):
                raise CommandRejected(f"connector {connector_id} is busy or out of service")
        self.record(Command.START, source, CommandResult.ACCEPTED, connector_id, id_tag=mask_id_tag(tag))

    def stop_session(
        self, connector_id: int, reason: StopReason = StopReason.LOCAL, *, source: CommandSource | None = None
    ) -> bool:
        """End the session on one connector (a local stop, e.g. over MQTT); False if none runs."""
        stopped = self._site.sessions.stop_one(connector_id, reason, self._site.clock.now())
        result = CommandResult.ACCEPTED if stopped else CommandResult.REJECTED
        self.record(Command.STOP, source, result, connector_id)
        return stopped

    def set_current_ceiling(
        self, connector_id: int, current_a: float | None, *, source: CommandSource | None = None
    ) -> None:
        """Cap ``connector_id`` at ``current_a`` (None: no cap) under any charging profile; kept
        across restarts. Raises ``CommandRejected`` for an unknown connector or a negative value."""
        with self._rejection_recorded(Command.CURRENT_CEILING, source, connector_id, current_a=current_a):
            if connector_id not in self._site.connectors:
                raise CommandRejected(f"no connector {connector_id}")
            if current_a is not None and not 0 <= current_a <= MAX_CEILING_A:
                raise CommandRejected(f"current_a must be between 0 and {MAX_CEILING_A:g} A, not {current_a:g}")
        unchanged = self._site.connectors[connector_id].current_ceiling_a == current_a
        self._site.connectors[connector_id].current_ceiling_a = current_a
        stored = {
            str(cid): c.current_ceiling_a for cid, c in self._site.connectors.items() if c.current_ceiling_a is not None
        }
        self._site.settings.save("current_ceilings", stored)
        self._site.emit(CurrentCeilingChanged(connector_id, current_a))
        result = CommandResult.ALREADY if unchanged else CommandResult.ACCEPTED
        self.record(Command.CURRENT_CEILING, source, result, connector_id, current_a=current_a)

    def set_soc_target(self, connector_id: int, percent: float | None, *, source: CommandSource | None = None) -> None:
        """Pause charging on ``connector_id`` once its SoC reaches ``percent`` (None: charge to full).

        Replaces the config's target and is kept across restarts. Raises ``CommandRejected`` for an
        unknown connector or a target out of range (above 0, at most 100)."""
        with self._rejection_recorded(Command.SOC_TARGET, source, connector_id, soc_target_percent=percent):
            self._site.batteries.set_target(connector_id, percent)
        accepted = CommandResult.ACCEPTED
        self.record(Command.SOC_TARGET, source, accepted, connector_id, soc_target_percent=percent)

    def set_site_limit(self, current_a: float | None, *, source: CommandSource | None = None) -> None:
        """Limit all chargers together to ``current_a`` per phase (None: lift it); see
        ``SharedLoad.set_site_limit``. Only a change is recorded: a HEMS that follows the sun
        sends the same limit again and again, and the log is not its echo."""
        before = self._site.load.site_limit_a
        with self._rejection_recorded(Command.SITE_LIMIT, source, None, current_a=current_a):
            self._site.load.set_site_limit(current_a)
        if current_a != before:
            self.record(Command.SITE_LIMIT, source, CommandResult.ACCEPTED, None, current_a=current_a)

    def stop_all_sessions(self, reason: StopReason) -> None:
        """End every running session (a reset of the gateway), and every start waiting for its car."""
        self._site.sessions.stop_all(reason, self._site.clock.now())
        self._refresh_statuses()
