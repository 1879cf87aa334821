"""The last good billing register of every connector and meter, guarded and kept across restarts.

Every energy reading passes ``guard`` before the Site uses it (see ``gateway.domain.metering``):
a register that went backwards or jumped beyond what its source can deliver is refused, logged
once with its raw value and reported as a fault until a plausible reading comes. The last good
value is saved to the settings store (section ``billing_registers``) when a fault is raised and
otherwise at most every ``SAVE_EVERY_S`` of reading time per source, so that a glitch right after
a restart is still measured against a real baseline. A stale baseline only makes the check more
lenient (more time has passed since it was read), never wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from gateway.domain.metering import REGISTER_JUMP, GoodRegister, check_register
from gateway.domain.model import Fault, Reading, iso_utc
from gateway.domain.ports import SettingsStore

log = logging.getLogger(__name__)

SECTION = "billing_registers"
SAVE_EVERY_S = 60.0


class BillingRegisters:
    """Guards readings per source (``"connector 3"``, ``"meter site-meter"``) against its ceiling."""

    def __init__(self, max_power_w: Mapping[str, float], settings: SettingsStore) -> None:
        """``max_power_w``: per source, the most it can deliver (sources not listed are not guarded
        against jumps, only against going backwards)."""
        self._max_power_w = dict(max_power_w)
        self._settings = settings
        self._good: dict[str, GoodRegister] = {}
        self._saved_at: dict[str, datetime] = {}
        self._alarm: set[str] = set()

    def restore(self) -> None:
        """Take back the last good registers saved before a restart (unreadable entries are skipped)."""
        stored = self._settings.load(SECTION)
        if not isinstance(stored, dict):
            return
        for where, item in stored.items():
            good = _good_register(item)
            if good is None:
                log.warning("stored billing register of %s ignored: %r", where, item)
                continue
            self._good[str(where)] = good
            self._saved_at[str(where)] = good.read_at

    def last(self, where: str) -> GoodRegister | None:
        """The last good register of ``where``, or None before its first."""
        return self._good.get(where)

    def plausible(self, where: str, energy_wh: int, at: datetime) -> Fault | None:
        """Whether ``energy_wh`` read at ``at`` could follow the last good register (no change is
        made): for a value that must not be billed unchecked although it is no news (a native
        charger's stop stamped before its last reading)."""
        last = self._good.get(where)
        reading = Reading(max(at, last.read_at) if last else at, energy_wh=energy_wh)
        return check_register(last, reading, self._max_power_w.get(where, float("inf")))[1]

    def guard(self, where: str, reading: Reading, *, quiet: bool = False) -> tuple[Reading, Fault | None]:
        """The reading to use (energy removed if refused) and the register fault, if any.

        ``quiet``: the caller reports a refusal itself (a native charger is answered with a
        CALLERROR and one log line), so nothing is logged and no fault episode begins here."""
        last = self._good.get(where)
        max_power_w = self._max_power_w.get(where, float("inf"))
        checked, fault, good = check_register(last, reading, max_power_w)
        if good is not None:
            self._good[where] = good
        if fault is not None and quiet:
            return checked, fault
        if fault is not None and where not in self._alarm:
            self._alarm.add(where)
            what = "rose faster than possible" if fault == REGISTER_JUMP else "fell"
            log.warning(
                "%s: energy register %s: %s Wh after %s; not used for billing",
                where,
                what,
                reading.energy_wh,
                f"{last.energy_wh} Wh at {iso_utc(last.read_at)}" if last else "nothing",
            )
            self._save()
        elif fault is None and where in self._alarm and checked.energy_wh is not None:
            self._alarm.discard(where)
            log.info("%s: energy register plausible again at %s Wh", where, reading.energy_wh)
        if good is not None and good is not last:
            saved_at = self._saved_at.get(where)
            if saved_at is None or (good.read_at - saved_at).total_seconds() >= SAVE_EVERY_S:
                self._save()
        return checked, fault

    def _save(self) -> None:
        self._settings.save(SECTION, {where: _stored(good) for where, good in self._good.items()})
        for where, good in self._good.items():
            self._saved_at[where] = good.read_at


def _stored(good: GoodRegister) -> dict[str, Any]:
    return {"energy_wh": good.energy_wh, "read_at": iso_utc(good.read_at)}


def _good_register(item: object) -> GoodRegister | None:
    if not isinstance(item, dict):
        return None
    energy_wh, read_at = item.get("energy_wh"), item.get("read_at")
    if type(energy_wh) is not int or energy_wh < 0 or not isinstance(read_at, str):
        return None
    try:
        moment = datetime.fromisoformat(read_at.replace("Z", "+00:00"))
    except ValueError:
        return None
    return GoodRegister(energy_wh, moment) if moment.tzinfo is not None else None


def forget_register(settings: SettingsStore, where: str) -> GoodRegister | None:
    """Drop the last good register kept for ``where`` (after a meter was swapped or reset, its
    readings stay refused as backwards until then); returns what was forgotten, or None.

    Only while the gateway is stopped: a running one writes its own view back."""
    stored = settings.load(SECTION)
    if not isinstance(stored, dict) or where not in stored:
        return None
    forgotten = _good_register(stored[where])
    settings.save(SECTION, {key: item for key, item in stored.items() if key != where})
    return forgotten
