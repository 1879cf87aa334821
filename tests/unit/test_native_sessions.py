"""A native charger's session across a gateway restart (found in review of issue 14)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.domain.model import Connector, Reading, iso_utc
from gateway.domain.transactions import StartTransaction, StopReason, StopTransaction
from gateway.services.site import Site


def test_a_start_resent_after_a_restart_is_the_same_session_whatever_digits_its_time_has() -> None:
    """The ledger keeps times to the millisecond; a charger may stamp microseconds."""
    site = Site([Connector(1, "NATIVE-1")], [])
    site.native.register([1])
    events = site.subscribe()
    at = datetime(2026, 11, 29, 12, 0, 0, 123456, tzinfo=UTC)  # as the charger stamps it
    site.native.resume(1, "c1-old", "TAG", 100_000, datetime.fromisoformat(iso_utc(at)))  # taken up from the ledger
    assert site.native.start(1, "TAG", 100_000, at) == "c1-old"  # the charger resends its unanswered start
    sessions = [e for e in iter(events.get_nowait, None) if isinstance(e, StartTransaction | StopTransaction)]
    assert sessions == []  # no 0 Wh stop, no second session


def native_site() -> tuple[Site, object]:
    site = Site([Connector(1, "NATIVE-1")], [])
    site.native.register([1])
    return site, site.subscribe()


def stops(events: object) -> list[StopTransaction]:
    return [e for e in iter(events.get_nowait, None) if isinstance(e, StopTransaction)]  # type: ignore[attr-defined]


NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("meter_stop_wh", "billed_wh"), [(1_000_000_000, 105_000), (101_000, 105_000)])
def test_a_stop_stamped_before_the_last_reading_is_checked_all_the_same(meter_stop_wh: int, billed_wh: int) -> None:
    """Found in review: a stale stop skipped the guard (absurd, or below a value already sent)."""
    site, events = native_site()
    site.native.reading(1, Reading(NOW, energy_wh=100_000))
    ref = site.native.start(1, "TAG", 100_000, NOW)
    later = NOW + timedelta(minutes=10)
    assert site.native.reading(1, Reading(later, energy_wh=105_000)) is None  # sent upstream in MeterValues
    assert site.native.stop(ref, meter_stop_wh, later - timedelta(seconds=1), StopReason.LOCAL)
    assert [s.meter_stop_wh for s in stops(events)] == [billed_wh]


def test_a_charger_that_sends_values_before_any_status_is_online() -> None:
    """Found by the proxy bench: a merged charger was online only after a StatusNotification, so the
    MeterValues of a charger that sent none first never reached the CSMS."""
    site, _ = native_site()
    assert site.device_online("NATIVE-1") is not True
    site.native.reading(1, Reading(NOW, energy_wh=100_000))
    assert site.device_online("NATIVE-1") is True


def test_a_remote_start_without_a_connector_is_never_given_to_a_native_charger() -> None:
    """Only the charger can start a session on its connector (the CSMS's request is relayed to it
    when it names that connector); a remote start that names none goes to a connector of the site's."""
    site = Site([Connector(1, "NATIVE-1"), Connector(2, "MODBUS-1")], [])
    site.native.register([1])
    assert site.commands.remote_start(None, "TAG")
    assert site.sessions.machines[2].pending_id_tag == "TAG"
    assert site.sessions.machines[1].pending_id_tag is None
    assert not site.commands.remote_start(None, "OTHER")  # the only one of the site's own is taken
