"""Reset of the 2.0.1 station and of one EVSE (OCPP 2.0.1 Part 2, B11 and B12).

The station (no ``evseId``): ``Immediate`` ends every transaction (stoppedReason ImmediateReset,
triggerReason ResetCommand), then the station reconnects and boots again (RemoteReset);
``OnIdle`` does the same at once when no transaction runs, else it answers ``Scheduled`` and
resets when the last one has ended (B12: the transactions are not cut short).

One EVSE of a Modbus charger: the gateway cannot power-cycle the charger behind it, and the
Site offers no way to read a device again from scratch, so what a reset of it can mean is its
transaction's end. ``Immediate`` ends it (as above) and answers ``Accepted``; ``OnIdle`` answers
``Accepted`` for an idle EVSE (nothing to do), ``Scheduled`` while a transaction runs (done,
i.e. logged, when it ends); an EVSE the station does not have is ``Rejected`` (reasonCode
UnknownEvse). A native (OCPP) charger's EVSE is not reset here: the peer relays the Reset to its
charger (native_relay.py), and a reset of the station resets the native chargers too. Every
answer is recorded as a command from the CSMS.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from gateway.domain.commands import Command, CommandSource, result_from_status
from gateway.domain.transactions import StopReason
from gateway.services.site import Site

log = logging.getLogger(__name__)

Answer = tuple[str, str | None]  # the status, and a reasonCode for a refusal


class Resets201:
    """Answers Reset requests and carries them out, now or when the transactions have ended."""

    def __init__(self, site: Site, reset_station: Callable[[bool], Awaitable[None]]) -> None:
        self.site = site
        self._reset_station = reset_station  # (hard) -> end every session, reconnect, boot again
        self.station_scheduled = False
        self.evses_scheduled: set[int] = set()
        self._task: asyncio.Task[None] | None = None
        self._answered: dict[tuple[str, int | None], str] = {}  # the answer each request's carry_out acts on

    def _busy(self, evse_id: int | None = None) -> bool:
        connectors = self.site.upstream_connectors
        targets = [connectors[evse_id]] if evse_id is not None else list(connectors.values())
        return any(c.session_active for c in targets)

    def answer(self, type_: str, evse_id: int | None) -> Answer:
        """The answer to a Reset (before anything is done: ``carry_out`` follows it)."""
        answer = self._station(type_) if evse_id is None else self._evse(type_, evse_id)
        what = "the station" if evse_id is None else f"EVSE {evse_id}"
        log.warning("CSMS asked for an %s reset of %s: %s", type_, what, answer[0])
        self._answered[(type_, evse_id)] = answer[0]
        result = result_from_status(answer[0])
        self.site.commands.record(Command.RESET, CommandSource.CSMS, result, evse_id, type=type_.lower())
        return answer

    def _station(self, type_: str) -> Answer:
        if type_ == "OnIdle" and self._busy():
            self.station_scheduled = True
            return "Scheduled", None
        return "Accepted", None

    def _evse(self, type_: str, evse_id: int) -> Answer:
        if evse_id not in self.site.upstream_connectors:
            return "Rejected", "UnknownEvse"
        if type_ == "OnIdle" and self._busy(evse_id):
            self.evses_scheduled.add(evse_id)
            return "Scheduled", None
        return "Accepted", None

    async def carry_out(self, type_: str, evse_id: int | None) -> None:
        """What an Accepted reset does, after its answer went (a Scheduled one waits for ``session_ended``)."""
        if self._answered.pop((type_, evse_id), None) != "Accepted":
            return
        if evse_id is None:
            self.station_scheduled = False
            await self._reset_station(type_ == "Immediate")
        elif self.site.connectors[evse_id].session_active:
            self.evses_scheduled.discard(evse_id)
            self.site.commands.stop_session(evse_id, StopReason.HARD_RESET)

    def session_ended(self, evse_id: int) -> None:
        """A transaction ended: a reset that waited for it is done now."""
        if evse_id in self.evses_scheduled and not self._busy(evse_id):
            self.evses_scheduled.discard(evse_id)
            log.info("EVSE %s reset (OnIdle): done, its transaction has ended", evse_id)
        if self.station_scheduled and not self._busy() and self._task is None:
            self.station_scheduled = False
            log.info("station reset (OnIdle): the last transaction has ended, resetting")
            self._task = asyncio.create_task(self._reset_when_idle())

    async def _reset_when_idle(self) -> None:
        try:
            await self._reset_station(False)
        except Exception:  # runs untracked: say what went wrong instead of losing it
            log.exception("scheduled reset failed")
        finally:
            self._task = None
