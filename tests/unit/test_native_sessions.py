"""A native charger's session across a gateway restart (found in review of issue 14)."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.domain.model import Connector, iso_utc
from gateway.domain.transactions import StartTransaction, StopTransaction
from gateway.services.site import Site


def test_a_start_resent_after_a_restart_is_the_same_session_whatever_digits_its_time_has() -> None:
    """The ledger keeps times to the millisecond; a charger may stamp microseconds."""
    site = Site([Connector(1, "NATIVE-1")], [])
    site.register_native([1])
    events = site.subscribe()
    at = datetime(2026, 11, 29, 12, 0, 0, 123456, tzinfo=UTC)  # as the charger stamps it
    site.native_resume(1, "c1-old", "TAG", 100_000, datetime.fromisoformat(iso_utc(at)))  # taken up from the ledger
    assert site.native_start(1, "TAG", 100_000, at) == "c1-old"  # the charger resends its unanswered start
    sessions = [e for e in iter(events.get_nowait, None) if isinstance(e, StartTransaction | StopTransaction)]
    assert sessions == []  # no 0 Wh stop, no second session
