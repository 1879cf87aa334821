"""Sessions towards the CSMS: the domain's session effects as OCPP 1.6 payloads, and their ids.

The CSMS numbers transactions (StartTransaction.conf); the gateway numbers them first with a
local reference, so that a stop, a remote stop or meter values can be queued before (or without)
the CSMS's answer and get the CSMS's id patched in when they are sent. What must survive a
restart is kept in the settings store: the CSMS ids of sessions not yet stopped upstream, and
the sessions open on the chargers with their last register reading (so a gateway that dies
mid-session can stop them with a real meterStop when it comes back).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from ocpp.v16 import call, datatypes, enums

from adapters.ocpp_upstream.local_list import AUTH_STATUS_FROM_OCPP
from gateway.domain.model import iso_utc
from gateway.domain.ports import SettingsStore
from gateway.domain.transactions import AuthStatus, StartTransaction, StopReason, StopTransaction

REASON = {
    StopReason.EV_DISCONNECTED: enums.Reason.ev_disconnected,
    StopReason.LOCAL: enums.Reason.local,
    StopReason.REMOTE: enums.Reason.remote,
    StopReason.POWER_LOSS: enums.Reason.power_loss,
    StopReason.REBOOT: enums.Reason.reboot,
    StopReason.SOFT_RESET: enums.Reason.soft_reset,
    StopReason.HARD_RESET: enums.Reason.hard_reset,
    StopReason.DEAUTHORIZED: enums.Reason.de_authorized,
    StopReason.EMERGENCY_STOP: enums.Reason.emergency_stop,
    StopReason.OTHER: enums.Reason.other,
}


UNKNOWN_TRANSACTION_ID = -1  # OCPP 1.6 errata 3.18: the start never got an id from the CSMS


def auth_status(id_tag_info: dict[str, object]) -> AuthStatus:
    """The domain status of an idTagInfo (snake_case, as the ocpp library hands it over)."""
    status = str(id_tag_info.get("status"))
    known = status in set(enums.AuthorizationStatus)
    return AUTH_STATUS_FROM_OCPP[enums.AuthorizationStatus(status)] if known else AuthStatus.INVALID


def register_value(value_wh: int, at: str, context: str) -> dict[str, Any]:
    """The billing register as one MeterValue (JSON-able, as queued)."""
    return asdict(
        datatypes.MeterValue(
            timestamp=at,
            sampled_value=[
                datatypes.SampledValue(
                    value=str(value_wh),
                    context=context,
                    measurand="Energy.Active.Import.Register",
                    location="Outlet",
                    unit="Wh",
                )
            ],
        )
    )


def start_payload(start: StartTransaction) -> dict[str, Any]:
    return asdict(
        call.StartTransaction(
            connector_id=start.connector_id,
            id_tag=start.id_tag,
            meter_start=start.meter_start_wh,
            timestamp=iso_utc(start.started_at),
        )
    )


LEDGER_SECTIONS = ("transaction_ids", "open_transactions")


def move_ledger(settings: SettingsStore, ledger: SettingsStore) -> None:
    """Versions before issue 14 kept the session ledger in the settings file: move it, once.

    The ledger is written first, then the settings copy is dropped, so a kill in between leaves
    it in both places and the next start only drops the old copy (the ledger's wins)."""
    for section in LEDGER_SECTIONS:
        kept = settings.load(section)
        if kept is None:
            continue
        if ledger.load(section) is None and not ledger.save(section, kept):
            continue  # the ledger refused it: the settings copy stays, for the next start
        settings.save(section, None)


def _load(store: SettingsStore, section: str) -> dict[str, Any]:
    stored = store.load(section)
    return stored if isinstance(stored, dict) else {}


def stop_payload(stop: StopTransaction, begin: dict[str, Any] | None, samples: list[dict[str, Any]]) -> dict[str, Any]:
    """StopTransaction with transactionData: Transaction.Begin, the StopTxn samples, Transaction.End.

    The transactionId is patched in at send time (``UNKNOWN_TRANSACTION_ID`` if the CSMS never
    numbered the session).
    """
    data = ([begin] if begin is not None else []) + samples
    data.append(register_value(stop.meter_stop_wh, iso_utc(stop.stopped_at), "Transaction.End"))
    return asdict(
        call.StopTransaction(
            meter_stop=stop.meter_stop_wh,
            timestamp=iso_utc(stop.stopped_at),
            transaction_id=UNKNOWN_TRANSACTION_ID,
            reason=REASON[stop.reason],
            id_tag=stop.id_tag,
            transaction_data=data,
        )
    )


REGISTER_SAVE_S = 60  # how often an open session's register is written down between samples (reading time)
STOP_TXN_DATA_MAX = 48  # StopTxn*Data values kept per session: the first and the latest
ENERGY_REGISTER = "Energy.Active.Import.Register"


def newest_reading(meter_values: list[Any]) -> tuple[int | None, datetime] | None:
    """(the highest energy register in Wh, or None, and the latest timestamp) of MeterValues about
    to be sent (``datatypes.MeterValue``), or None if there are none."""
    if not meter_values:
        return None
    latest = max(datetime.fromisoformat(v.timestamp.replace("Z", "+00:00")) for v in meter_values)
    energies = [
        int(float(s.value) * (1000 if str(s.unit).lower().startswith("k") else 1))
        for v in meter_values
        for s in v.sampled_value
        if s.measurand == ENERGY_REGISTER
    ]
    return max(energies, default=None), latest


@dataclass
class OpenTransaction:
    """A session running on a charger, as the gateway must remember it across a restart.

    ``last_register_wh`` is the highest billing register known for it and ``last_register_at``
    the latest time of anything sent for it: a stop after a crash bills that reading at that
    time, so it is never below, nor earlier than, a MeterValues already on its way to the CSMS.
    """

    local_ref: str
    connector_id: int
    id_tag: str
    meter_start_wh: int
    started_at: str
    last_register_wh: int
    last_register_at: str

    def raise_to(self, value_wh: int | None, at: datetime) -> bool:
        """Take a newer reading into account; True if anything changed."""
        changed = False
        if value_wh is not None and value_wh > self.last_register_wh:
            self.last_register_wh, changed = value_wh, True
        if at > datetime.fromisoformat(self.last_register_at):
            self.last_register_at, changed = iso_utc(at), True
        return changed


class TransactionLog:
    """What is known of each session: its CSMS id, whether it is open, its StopTxn samples.

    ``store`` keeps it across restarts (its own file in the gateway, so a damaged settings file
    cannot take the transaction ids down; see ``move_ledger``).
    """

    def __init__(self, store: SettingsStore) -> None:
        self._store = store
        stored_ids = _load(store, "transaction_ids")
        self.csms_ids: dict[str, int] = {str(k): int(v) for k, v in stored_ids.items()}
        stored_open = _load(store, "open_transactions")
        self.open: dict[str, OpenTransaction] = {ref: OpenTransaction(**item) for ref, item in stored_open.items()}
        self.running: dict[int, str] = {}  # connector -> local ref of the session running now
        self._samples: dict[str, list[dict[str, Any]]] = {}  # local ref -> StopTxn*Data MeterValues
        self._saved_at: dict[str, datetime] = {}  # local ref -> reading time of its last register save
        self._unsaved: set[str] = set()  # open sessions whose last register is newer in memory than on disk
        self._ids_unsaved = False  # the disk refused the last write of the CSMS ids

    def left_open_by_last_run(self) -> list[OpenTransaction]:
        """Sessions that were open when the last process ended (the caller stops them)."""
        return list(self.open.values())

    def started(self, start: StartTransaction) -> None:
        at = iso_utc(start.started_at)
        self.running[start.connector_id] = start.local_ref
        self.open[start.local_ref] = OpenTransaction(
            start.local_ref, start.connector_id, start.id_tag, start.meter_start_wh, at, start.meter_start_wh, at
        )
        self._save_open()

    def stop_payload(self, stop: StopTransaction) -> dict[str, Any]:
        """The StopTransaction payload of a session that ended on the charger (nothing forgotten
        yet: the caller queues it first, then calls ``closed``, so a kill in between leaves the
        session open, to be stopped after the restart, rather than lost)."""
        if self.running.get(stop.connector_id) == stop.local_ref:
            del self.running[stop.connector_id]
        opened = self.open.get(stop.local_ref)
        begin = None
        if opened is not None:
            begin = register_value(opened.meter_start_wh, opened.started_at, "Transaction.Begin")
        return stop_payload(stop, begin, self._samples.pop(stop.local_ref, []))

    def closed(self, local_ref: str) -> None:
        """The session's StopTransaction is queued: it is no longer open."""
        if self.open.pop(local_ref, None) is not None:
            self._save_open()

    def register_seen(self, local_ref: str, value_wh: int, at: datetime) -> None:
        """The billing register of an open session, kept so a restart can stop it with it.

        Written to disk at most every REGISTER_SAVE_S of reading time per session (the file is
        rewritten and fsynced whole); between samples a power cut loses at most that much of the
        meterStop. What is sent is kept durably first (``before_sending``).
        """
        opened = self.open.get(local_ref)
        if opened is None or not opened.raise_to(value_wh, at):
            return
        self._unsaved.add(local_ref)
        saved_at = self._saved_at.get(local_ref) or datetime.fromisoformat(opened.started_at)
        if (at - saved_at).total_seconds() >= REGISTER_SAVE_S:
            self._save_open()

    def before_sending(self, readings: dict[str, tuple[int | None, datetime]]) -> None:
        """MeterValues of these sessions are about to be queued: (their highest register, their
        latest time) per local reference is written down first, in one durable write, so that a
        stop after a crash is never below nor before what the CSMS has been sent."""
        for ref, reading in readings.items():
            if ref in self.open and self.open[ref].raise_to(*reading):
                self._unsaved.add(ref)
        if self._unsaved & readings.keys():
            self._save_open()

    def add_stop_sample(self, local_ref: str, meter_value: dict[str, Any]) -> None:
        """A StopTxnSampledData / StopTxnAlignedData value for the session's transactionData."""
        samples = self._samples.setdefault(local_ref, [])
        samples.append(meter_value)
        if len(samples) > STOP_TXN_DATA_MAX:
            del samples[1]  # keep the first; the rest is the latest ones

    def numbered(self, local_ref: str, transaction_id: int) -> None:
        """The CSMS numbered ``local_ref`` (see ``ids_on_disk``: its start leaves the queue only then)."""
        self.csms_ids[local_ref] = transaction_id
        self._save_ids()

    def ids_on_disk(self) -> bool:
        """Whether every CSMS id known is on disk; tries the disk again if the last write failed."""
        if self._ids_unsaved:
            self._save_ids()
        return not self._ids_unsaved

    def finished(self, local_ref: str) -> None:
        """Forget a session's id once its StopTransaction was delivered."""
        if self.csms_ids.pop(local_ref, None) is not None:
            self._save_ids()

    def csms_id(self, local_ref: str | None) -> int | None:
        return self.csms_ids.get(local_ref) if local_ref is not None else None

    def local_ref(self, transaction_id: int) -> str | None:
        return next((ref for ref, tid in self.csms_ids.items() if tid == transaction_id), None)

    def active_id(self, connector_id: int) -> int | None:
        """The CSMS id of the session running on ``connector_id``, if the CSMS has numbered it."""
        return self.csms_id(self.running.get(connector_id))

    def _save_open(self) -> None:
        self._store.save("open_transactions", {ref: asdict(item) for ref, item in self.open.items()})
        for ref, item in self.open.items():
            self._saved_at[ref] = datetime.fromisoformat(item.last_register_at)
        self._unsaved.clear()

    def _save_ids(self) -> None:
        self._ids_unsaved = not self._store.save("transaction_ids", self.csms_ids)
