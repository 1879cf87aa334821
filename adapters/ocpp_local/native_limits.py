"""A merged native charger's share of the site's power: a charging profile of the gateway's own.

The LimitKeeper decides every connector's share (``CurrentLimitRequested``: 0 = pause, else at
least 6 A). A Modbus charger gets it written to a register; a merged native charger, whose CSMS the
gateway is, gets a ``SetChargingProfile`` for its running transaction:

* purpose ``TxProfile``, bound to the charger's transaction id, so it ends with the session;
* stack level ``GATEWAY_STACK_LEVEL`` (100, the ChargeProfileMaxStackLevel the gateway publishes to
  its CSMS): it wins over the CSMS's TxProfiles, which stay installed on the charger and apply
  again once ours has ended with the session;
* profile id ``GATEWAY_PROFILE_ID_BASE`` + the site's connector number, so that a new share
  replaces the last one;
* unit A, one period from 0 with the share as its ``limit`` (0 pauses; OCPP allows 0).

The share already holds the CSMS's Tx/TxDefault limits for the connector (the upstream side keeps a
copy of every profile its charger accepted, and the keeper reads them), so the CSMS's limits stay in
force. A CSMS profile that would take the gateway's place is refused before it reaches the charger
(``reserved_problem``): a TxProfile at stack level 100 or above, or a profile id of the gateway's
range; so is a ClearChargingProfile by such an id. After any other ClearChargingProfile the charger
accepted (it may have cleared the gateway's profile with the CSMS's), the share is sent again.

A profile is sent only when its value (or the transaction) changed since the charger last took
it. A charger that refuses or does not answer is logged once (WARNING) until it takes one again;
the same value is not sent again until the share changes or the charger reconnects. A charger that
is not connected is skipped (the sharing counts it as silent); when it connects again its current
share is sent with its first message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ocpp.v16 import call
from websockets.exceptions import ConnectionClosed

if TYPE_CHECKING:
    from adapters.ocpp_local.merge import MergedSessions

log = logging.getLogger(__name__)

GATEWAY_STACK_LEVEL = 100
GATEWAY_PROFILE_ID_BASE = 2_000_000_000  # + the site's connector number; below 2**31
PROFILE_CALL_S = 15.0  # the charger's answer to the gateway's profile

_Target = tuple[int, float]  # (the charger's transaction id, the limit in A)


def gateway_profile_id(site_connector: int) -> int:
    return GATEWAY_PROFILE_ID_BASE + site_connector


def reserved_problem(profile: Mapping[str, Any]) -> str | None:
    """Why a CSMS profile (snake_case) may not be relayed to a merged native charger, or None."""
    profile_id = profile.get("charging_profile_id")
    if isinstance(profile_id, int) and profile_id >= GATEWAY_PROFILE_ID_BASE:
        return f"profile ids from {GATEWAY_PROFILE_ID_BASE} are the gateway's own on native chargers"
    stack_level = profile.get("stack_level")
    purpose = profile.get("charging_profile_purpose")
    if purpose == "TxProfile" and isinstance(stack_level, int) and stack_level >= GATEWAY_STACK_LEVEL:
        return f"TxProfile stack level {GATEWAY_STACK_LEVEL} and above is the gateway's own on native chargers"
    return None


class NativeLimits:
    """Sends each merged native connector its share; owned by MergedSessions."""

    def __init__(self, merged: MergedSessions) -> None:
        self.merged = merged
        self.wanted: dict[int, float] = {}  # site connector -> its last share
        self.sent: dict[int, _Target] = {}  # ...what its charger accepted
        self.failed: dict[int, _Target] = {}  # ...what its charger refused or left unanswered
        self._sending: dict[int, asyncio.Task[None]] = {}

    def requested(self, connector_id: int, limit_a: float) -> None:
        """The keeper's share for one of these connectors."""
        self.wanted[connector_id] = limit_a
        self.update(connector_id)

    def reconnected(self, identity: str) -> None:
        """A charger (lowercased identity) opened a new connection: what it had may be gone."""
        for connector_id in self._connectors_of(identity):
            self.sent.pop(connector_id, None)
            self.failed.pop(connector_id, None)
            sending = self._sending.pop(connector_id, None)
            if sending is not None:  # a call on the old connection would wait for an answer in vain
                sending.cancel()

    def cleared(self, connector_id: int) -> None:
        """The charger accepted a ClearChargingProfile of the CSMS's: ours may have gone with it."""
        self.sent.pop(connector_id, None)
        self.update(connector_id)

    def update_charger(self, identity: str) -> None:
        """Send what each connector of the charger (lowercased identity) should have and has not."""
        for connector_id in self._connectors_of(identity):
            self.update(connector_id)

    def update(self, connector_id: int) -> None:
        if connector_id in self._sending or self._due(connector_id) is None:
            return
        task = asyncio.ensure_future(self._send(connector_id))
        self._sending[connector_id] = task
        task.add_done_callback(lambda done: self._done(connector_id, done))

    def _done(self, connector_id: int, task: asyncio.Task[None]) -> None:
        if self._sending.get(connector_id) is task:
            del self._sending[connector_id]

    def _connectors_of(self, identity: str) -> list[int]:
        return [cid for cid, (ident, _) in self.merged.charger_connector.items() if ident == identity]

    def _target(self, connector_id: int) -> _Target | None:
        """What the charger should have now: None when there is nothing to send it (no share yet,
        not connected, no transaction, or its transaction id not given yet)."""
        limit_a = self.wanted.get(connector_id)
        identity, _ = self.merged.charger_connector[connector_id]
        session = self.merged.site.connectors[connector_id].session
        if limit_a is None or session is None or identity not in self.merged.live:
            return None
        transaction_id = self.merged.known_id(session.local_ref)
        return None if transaction_id is None else (transaction_id, limit_a)

    def _due(self, connector_id: int) -> _Target | None:
        target = self._target(connector_id)
        if target is None or target in (self.sent.get(connector_id), self.failed.get(connector_id)):
            return None
        return target

    async def _send(self, connector_id: int) -> None:
        while (target := self._due(connector_id)) is not None:
            identity, number = self.merged.charger_connector[connector_id]
            session = self.merged.live[identity]
            name = self.merged.identity.get(identity, identity)
            limit_a = target[1]
            request = call.SetChargingProfile(connector_id=number, cs_charging_profiles=_profile(connector_id, target))
            try:
                result = await asyncio.wait_for(session.call(request, suppress=False), PROFILE_CALL_S)
                status = str(getattr(result, "status", "no status"))
            except ConnectionClosed:
                return  # offline: it gets its share again when it connects
            except Exception as exc:  # a CALLERROR or no answer: the charger's failure, not ours
                if self.merged.live.get(identity) is not session:
                    return  # the connection went meanwhile: it gets its share again when it connects
                status = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if status == "Accepted":
                if self.failed.pop(connector_id, None) is not None:
                    log.info("OCPP charger %s connector %s: takes the gateway's profile again", name, number)
                self.sent[connector_id] = target
                log.debug("OCPP charger %s connector %s: share %g A", name, number, limit_a)
                continue
            if connector_id not in self.failed:
                log.warning(
                    "OCPP charger %s connector %s: did not take the gateway's profile (%g A: %s); its share "
                    "is not sent again until it changes or the charger reconnects",
                    name,
                    number,
                    limit_a,
                    status,
                )
            self.sent.pop(connector_id, None)
            self.failed[connector_id] = target


def _profile(connector_id: int, target: _Target) -> dict[str, Any]:
    transaction_id, limit_a = target
    return {
        "charging_profile_id": gateway_profile_id(connector_id),
        "transaction_id": transaction_id,
        "stack_level": GATEWAY_STACK_LEVEL,
        "charging_profile_purpose": "TxProfile",
        "charging_profile_kind": "Relative",
        "charging_schedule": {
            "charging_rate_unit": "A",
            "charging_schedule_period": [{"start_period": 0, "limit": round(limit_a, 1)}],
        },
    }
