"""The session report's sums (gateway/services/history_report.py): months in a zone, what is not
counted, id tags grouped whole, exact kWh, the CSV rows."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from gateway.domain.authorization import mask_id_tag
from gateway.domain.history import DeliveryState, SessionRecord
from gateway.services.history_report import (
    CSV_COLUMNS,
    Period,
    Standing,
    Total,
    by_connector,
    by_month,
    by_tag_and_month,
    csv_rows,
    duration,
    kwh,
    month_of,
    overall,
    select,
    standing,
    tag_key,
    tag_labels,
)

BERLIN = ZoneInfo("Europe/Berlin")
TAG = "04A1B2C3D4E5F6"
TWIN = "FFFFFFFFD4E5F6"  # another card that ends in the same four characters


def session(
    ref: str,
    started: str | None = "2026-03-10T08:00:00.000Z",
    stopped: str | None = "2026-03-10T09:00:00.000Z",
    energy_wh: int | None = 1_000,
    connector: int = 1,
    tag: str = TAG,
) -> SessionRecord:
    """A row as the store gives it back: energy known only with both registers."""
    start_wh = None if energy_wh is None or started is None else 10_000
    stop_wh = None if stopped is None else (start_wh or 0) + (energy_wh or 0)
    seconds = None
    if started and stopped:
        seconds = (datetime.fromisoformat(stopped) - datetime.fromisoformat(started)).total_seconds()
    return SessionRecord(
        ref,
        connector,
        f"charger-{connector}",
        tag,
        mask_id_tag(tag),
        started,
        stopped,
        start_wh,
        stop_wh,
        energy_wh if stopped is not None and started is not None else None,
        seconds,
        None,
        None if stopped is None else "ev_disconnected",
        None,
        None if stopped is None else DeliveryState.DELIVERED,
    )


def test_a_session_belongs_to_the_month_of_its_start_in_the_chosen_zone() -> None:
    new_year = session("a", "2026-02-28T23:30:00.000Z", "2026-03-01T01:00:00.000Z")  # 00:30 on 1 March in Berlin
    summer = session("b", "2026-03-31T22:30:00.000Z", "2026-04-01T00:00:00.000Z")  # 00:30 on 1 April (CEST, +2)
    assert month_of(new_year, UTC) == "2026-02"
    assert month_of(new_year, BERLIN) == "2026-03"
    assert month_of(summer, UTC) == "2026-03"
    assert month_of(summer, BERLIN) == "2026-04"
    assert by_month([new_year, summer], BERLIN) == {"2026-03": Total(1, 1_000), "2026-04": Total(1, 1_000)}
    assert by_month([new_year, summer], UTC) == {"2026-02": Total(1, 1_000), "2026-03": Total(1, 1_000)}


def test_a_session_that_ends_in_the_next_month_counts_where_it_started() -> None:
    overnight = session("a", "2026-03-31T20:00:00.000Z", "2026-04-01T06:00:00.000Z", energy_wh=22_000)
    assert by_month([overnight], UTC) == {"2026-03": Total(1, 22_000)}


def test_running_sessions_and_unknown_energy_are_listed_but_never_summed() -> None:
    done = session("done", energy_wh=7_400)
    running = session("running", stopped=None)
    unknown = session("unknown", started=None, energy_wh=None)  # a stop whose start the history missed
    rows = [done, running, unknown]
    assert [standing(r) for r in rows] == [Standing.COUNTED, Standing.RUNNING, Standing.UNKNOWN]
    assert overall(rows) == Total(1, 7_400)
    assert by_connector(rows) == {1: Total(1, 7_400)}
    assert by_month(rows, UTC) == {"2026-03": Total(1, 7_400)}
    assert by_tag_and_month(rows, UTC) == {("2026-03", tag_key(TAG)): Total(1, 7_400)}
    assert [r.local_ref for r in select(rows)] == ["done", "running", "unknown"]  # listed: the stop places "unknown"


def test_two_tags_that_mask_alike_stay_apart_and_get_numbered_labels() -> None:
    rows = [
        session("a", tag=TAG, energy_wh=1_000),
        session("b", "2026-03-11T08:00:00.000Z", "2026-03-11T09:00:00.000Z", tag=TWIN, energy_wh=2_000),
        session("c", "2026-03-12T08:00:00.000Z", "2026-03-12T09:00:00.000Z", tag=TAG.lower(), energy_wh=4_000),
    ]
    assert mask_id_tag(TAG) == mask_id_tag(TWIN)
    sums = by_tag_and_month(rows, UTC)
    assert sums == {("2026-03", tag_key(TAG)): Total(2, 5_000), ("2026-03", tag_key(TWIN)): Total(1, 2_000)}
    labels = tag_labels(rows)
    assert labels == {tag_key(TAG): "****E5F6/1", tag_key(TWIN): "****E5F6/2"}  # in order of first appearance
    assert TAG not in "".join(labels.values())


def test_short_tags_are_masked_whole_and_still_told_apart() -> None:
    rows = [session("a", tag="FREE"), session("b", tag="1234567"), session("c", tag="04A1B2C3D4E5F6")]
    assert list(tag_labels(rows).values()) == ["****/1", "****/2", "****E5F6"]


def test_select_by_period_connector_and_full_tag_oldest_first() -> None:
    early = session("early", "2026-03-01T00:00:00.000Z", "2026-03-01T01:00:00.000Z")
    late = session("late", "2026-03-31T23:59:59.999Z", "2026-04-01T01:00:00.000Z", connector=2, tag=TWIN)
    april = session("april", "2026-04-01T00:00:00.000Z", "2026-04-01T01:00:00.000Z")
    no_start = session("no-start", started=None, stopped="2026-03-15T10:00:00.000Z", energy_wh=None)
    rows = [april, late, no_start, early]  # as the store gives them: newest first
    march = Period(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
    assert [r.local_ref for r in select(rows, march)] == ["early", "no-start", "late"]  # since in, until out
    assert [r.local_ref for r in select(rows, connector_id=2)] == ["late"]
    assert [r.local_ref for r in select(rows, id_tag=TWIN.lower())] == ["late"]  # the full tag, any case
    assert select(rows, id_tag="D4E5F6") == []  # never by its end
    assert [r.local_ref for r in select(rows)] == ["early", "no-start", "late", "april"]


def test_a_row_without_any_time_is_only_in_an_open_period() -> None:
    timeless = session("t", started=None, stopped=None, energy_wh=None)
    assert Period().holds(None)
    assert not Period(since=datetime(2026, 1, 1, tzinfo=UTC)).holds(None)
    assert month_of(timeless, UTC) == "?"


def test_kwh_is_exact_with_three_decimals() -> None:
    assert kwh(12_345) == "12.345"
    assert kwh(5) == "0.005"
    assert kwh(0) == "0.000"
    assert kwh(-1_500) == "-1.500"
    assert kwh(9_007_199_254_740_993) == "9007199254740.993"  # beyond a float's exact integers
    rows = [session(str(n), energy_wh=1) for n in range(1_000)]
    assert kwh(overall(rows).energy_wh) == "1.000"  # ints add up: no 0.9999999


def test_duration_in_hours_and_minutes() -> None:
    assert duration(3_900.0) == "1:05"
    assert duration(59.9) == "0:00"
    assert duration(100 * 3_600.0) == "100:00"
    assert duration(None) == "?"
    assert duration(-5.0) == "0:00"


def test_csv_rows_hold_the_store_fields_with_the_full_tag_only_when_asked() -> None:
    running = session("r", stopped=None)
    rows = csv_rows([session("a", energy_wh=7_400), running], full_tags=True)
    columns = [*CSV_COLUMNS[:4], "id_tag_full", *CSV_COLUMNS[4:]]
    assert rows[0] == columns
    first = dict(zip(columns, rows[1], strict=True))
    assert (first["id_tag"], first["id_tag_full"]) == ("****E5F6", TAG)
    assert first["energy_wh"] == "7400"
    assert first["started_at"] == "2026-03-10T08:00:00.000Z"
    assert first["duration_s"] == "3600.000"
    assert first["delivery"] == "delivered"
    second = dict(zip(columns, rows[2], strict=True))
    assert (second["stopped_at"], second["meter_stop_wh"], second["delivery"]) == ("", "", "")
    masked_only = csv_rows([session("a")], full_tags=False)
    assert masked_only[0] == list(CSV_COLUMNS) and TAG not in str(masked_only)


def test_csv_text_that_a_spreadsheet_would_run_is_kept_as_text() -> None:
    rows = csv_rows([session("a", tag="=HYPERLINK(1)"), session("b", tag="+4912345678")], full_tags=True)
    assert [row[rows[0].index("id_tag_full")] for row in rows[1:]] == ["'=HYPERLINK(1)", "'+4912345678"]
