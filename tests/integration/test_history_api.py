"""The history over HTTP: ``/api/sessions`` (+ ``.csv``), ``/api/events``, ``/api/series`` and the
status page's history sections, on the real server over loopback, reading a real
``SqliteHistoryStore`` filled with rows in a temporary folder.

A Site fed by hand with a clock that stands still is enough: what is read is the store's.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.storage.history_db import FILE_NAME, SqliteHistoryStore
from adapters.web.server import StatusServer
from gateway import __version__
from gateway.config import StatusPageConfig
from gateway.domain.history import (
    DeliveryState,
    EventKind,
    HistoryEvent,
    HistoryWrite,
    SeriesSample,
    SessionDelivery,
    SessionNumbered,
    SessionStarted,
    SessionStopped,
)
from gateway.domain.model import Connector
from gateway.services.history import History
from gateway.services.site import Site
from gateway.services.site_picture import SiteLabels
from gateway.services.telemetry import Telemetry
from tests.fixtures.modbus import StepClock
from tests.fixtures.net import free_port
from tests.fixtures.status_site import PASSWORD, USER, authorization

NOW = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
DAY1, DAY2 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC), datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
TAG, EVIL_TAG = "04A1B2C3D4E5F6", "=HYPERLINK(1)"
AUTH = (USER, PASSWORD)
SESSION_KEYS = [
    "local_ref",
    "connector_id",
    "device",
    "id_tag",
    "started_at",
    "stopped_at",
    "meter_start_wh",
    "meter_stop_wh",
    "energy_wh",
    "duration_s",
    "peak_power_w",
    "stop_reason",
    "csms_transaction_id",
    "delivery",
]


def rows() -> list[HistoryWrite]:
    """Three sessions (delivered, parked, running), a fault and a CSMS outage, and 3 hours of
    series of connectors 0, 1 and 2 with a gap of 10 minutes."""
    writes: list[HistoryWrite] = [
        SessionStarted("c1-a", 1, "left", TAG, DAY1, 1_000),
        SessionNumbered("c1-a", 77),
        SessionStopped("c1-a", 1, "left", TAG, DAY1 + timedelta(hours=1), 8_400, "ev_disconnected", 7_400.0),
        SessionDelivery("c1-a", DeliveryState.DELIVERED),
        SessionStarted("c2-b", 2, "right", EVIL_TAG, DAY2, 50_000),
        SessionStopped("c2-b", 2, "right", EVIL_TAG, DAY2 + timedelta(minutes=90), 61_000, "local", 11_000.0),
        SessionDelivery("c2-b", DeliveryState.PARKED),
        SessionStarted("c1-c", 1, "left", TAG, NOW - timedelta(hours=1), 8_400),
        HistoryEvent(DAY2 - timedelta(hours=1), EventKind.FAULT_RAISED, 1, "left", {"kind": "over_temperature"}),
        HistoryEvent(
            DAY2 - timedelta(minutes=55),
            EventKind.FAULT_CLEARED,
            1,
            "left",
            {"kind": "over_temperature", "duration_s": 300.0},
        ),
        HistoryEvent(NOW - timedelta(hours=2), EventKind.CSMS_DOWN, detail={"reason": "connection refused"}),
        HistoryEvent(NOW - timedelta(hours=2) + timedelta(minutes=1), EventKind.CSMS_UP, detail={"registration": "Ok"}),
    ]
    for minute in range(180):
        if 60 <= minute < 70:
            continue  # the gateway was stopped
        at = NOW - timedelta(minutes=180 - minute)
        writes += [
            SeriesSample(at, 0, 9_000.0, None, None, 32.0),
            SeriesSample(at, 1, 4_000.0, minute, "charging", 16.0),
            SeriesSample(at, 2, 3_000.0 if minute % 2 else None, minute, "charging", None),
        ]
    return writes


@asynccontextmanager
async def serving(
    tmp_path: Path, *, password: bool = False, history: bool = True, fill: bool = True
) -> AsyncIterator[tuple[StatusServer, SqliteHistoryStore | None]]:
    site = Site([Connector(1, "left"), Connector(2, "right")], [], clock=StepClock(NOW))
    store = SqliteHistoryStore(tmp_path / "history") if history else None
    if store is not None and fill:
        store.write(rows())
    credentials = {"username": USER, "password": PASSWORD} if password else {}
    settings = StatusPageConfig(port=free_port(), **credentials)
    kept = History(site, store) if store is not None else None
    server = StatusServer(
        site, Telemetry(["left", "right"]), settings, SiteLabels("h"), history=kept, started_at=NOW - timedelta(hours=2)
    )
    await server.start()
    try:
        yield server, store
    finally:
        await server.stop()
        if store is not None:
            store.close()


async def get(server: StatusServer, path: str, auth: tuple[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    async with aiohttp.ClientSession() as http, http.get(server.url + path, headers=authorization(auth)) as answer:
        return answer.status, dict(answer.headers), await answer.text()


async def get_json(server: StatusServer, path: str, auth: tuple[str, str] | None = None) -> Any:
    status, headers, text = await get(server, path, auth)
    assert status == 200, text
    assert headers["Content-Type"].startswith("application/json")
    return json.loads(text)


# -- /api/sessions ---------------------------------------------------------------------------------
async def test_sessions_come_newest_first_with_masked_tags_only_without_a_password(tmp_path: Path) -> None:
    async with serving(tmp_path) as (server, _):
        sessions = await get_json(server, "/api/sessions")
    assert [s["local_ref"] for s in sessions] == ["c1-c", "c2-b", "c1-a"]
    assert all(list(s) == SESSION_KEYS for s in sessions)  # no id_tag_full without a password
    first = sessions[2]
    assert first["id_tag"] == "****E5F6" and first["energy_wh"] == 7_400 and first["duration_s"] == 3600
    assert (first["started_at"], first["delivery"], first["csms_transaction_id"]) == (
        "2026-03-01T08:00:00.000Z",
        "delivered",
        77,
    )
    assert sessions[1]["delivery"] == "parked" and sessions[0]["delivery"] is None
    assert sessions[1]["id_tag"] == "****K(1)"


async def test_full_tags_and_the_tag_filter_only_with_a_password(tmp_path: Path) -> None:
    async with serving(tmp_path, password=True) as (server, _):
        sessions = await get_json(server, "/api/sessions", AUTH)
        assert [s["id_tag_full"] for s in sessions] == [TAG, EVIL_TAG, TAG]
        assert list(sessions[0])[3:5] == ["id_tag", "id_tag_full"]
        mine = await get_json(server, f"/api/sessions?id_tag={TAG}", AUTH)
        assert [s["local_ref"] for s in mine] == ["c1-c", "c1-a"]
        assert await get_json(server, "/api/sessions?id_tag=04A1B2C3D4E5F", AUTH) == []  # the full tag, exactly
        assert (await get(server, "/api/sessions"))[0] == 401  # and without the credentials: nothing
    async with serving(tmp_path / "open") as (server, _):
        status, _, text = await get(server, f"/api/sessions?id_tag={TAG}")
    assert status == 403 and text.startswith("403: id_tag: filtering by id tag needs the status page's password")
    assert TAG not in text


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("since=2026-03-02", ["c1-c", "c2-b"]),  # a date alone: that day's 00:00 UTC
        ("until=2026-03-02", ["c1-a"]),  # exclusive
        ("since=2026-03-02T09:00:00&until=2026-03-02T12:00", ["c2-b"]),  # naive: UTC
        ("since=2026-03-02T10:30%2B01:00", ["c1-c", "c2-b"]),  # 09:30 UTC (10:30 in UTC would miss c2-b)
        ("connector=1", ["c1-c", "c1-a"]),
        ("connector=1&limit=1", ["c1-c"]),
        ("connector=3", []),
    ],
)
async def test_sessions_filter_by_time_connector_and_limit(tmp_path: Path, query: str, expected: list[str]) -> None:
    async with serving(tmp_path) as (server, _):
        sessions = await get_json(server, f"/api/sessions?{query}")
    assert [s["local_ref"] for s in sessions] == expected


async def test_the_csv_export_parses_back_with_a_header_and_the_same_rows(tmp_path: Path) -> None:
    async with serving(tmp_path) as (server, _):
        status, headers, text = await get(server, "/api/sessions.csv?connector=2")
        assert status == 200
        assert headers["Content-Type"] == "text/csv; charset=utf-8"
        assert headers["Content-Disposition"] == 'attachment; filename="sessions-20260303T120000Z.csv"'
        (row,) = list(csv.DictReader(io.StringIO(text)))
        assert list(row) == SESSION_KEYS
        assert (row["local_ref"], row["id_tag"], row["energy_wh"], row["delivery"]) == (
            "c2-b",
            "****K(1)",
            "11000",
            "parked",
        )
        assert (row["started_at"], row["stopped_at"], row["duration_s"]) == (
            "2026-03-02T10:00:00.000Z",
            "2026-03-02T11:30:00.000Z",
            "5400.000",
        )
        empty = (await get(server, "/api/sessions.csv?connector=9"))[2]
        assert empty.splitlines() == [",".join(SESSION_KEYS)]  # the header even without rows
        running = list(csv.DictReader(io.StringIO((await get(server, "/api/sessions.csv?limit=1"))[2])))
        assert running[0]["stopped_at"] == "" and running[0]["delivery"] == ""
    async with serving(tmp_path / "closed", password=True) as (server, _):
        text = (await get(server, "/api/sessions.csv", AUTH))[2]
    rows_ = list(csv.DictReader(io.StringIO(text)))
    assert [r["id_tag_full"] for r in rows_] == [TAG, "'" + EVIL_TAG, TAG]  # a formula made inert


BAD = [
    ("connector=" + "9" * 5000, "400: connector: must be a whole number from 0 to 999999"),
    ("connector=-1", "400: connector: must be a whole number"),
    ("connector=\u0661", "400: connector: must be a whole number"),  # an Arabic-Indic one: not ASCII
    ("since=garbage", "400: since: is not an ISO 8601 date or time ('garbage')"),
    ("until=" + "2" * 500, "400: until: is not an ISO 8601 date or time (too long)"),
    ("since=0001-01-01T00:00%2B01:00", "400: since: is out of range"),
    ("since=2026-03-02&until=2026-03-01", "400: until: must be later than since (2026-03-02T00:00:00Z)"),
    ("limit=0", "400: limit: must be a whole number from 1 to 100000, not '0'"),
    ("limit=100001", "400: limit: must be a whole number from 1 to 100000"),
    ("limit=1&limit=2", "400: limit: given more than once"),
    ("format=csv", "400: 'format': no such parameter here (known: since, until, connector, id_tag, limit)"),
    ("kind=csms_up", "400: 'kind': no such parameter here"),
]


@pytest.mark.parametrize(("query", "expected"), BAD)
async def test_a_bad_parameter_is_a_400_naming_it(tmp_path: Path, query: str, expected: str) -> None:
    async with serving(tmp_path) as (server, _):
        for path in ("/api/sessions", "/api/sessions.csv"):
            status, headers, text = await get(server, f"{path}?{query}")
            assert status == 400, text
            assert text.startswith(expected), text
            assert text.count("\n") == 1 and len(text) < 300 and "Traceback" not in text
            assert headers["X-Content-Type-Options"] == "nosniff"


# -- /api/events, /api/series ----------------------------------------------------------------------
async def test_events_newest_first_filtered_by_kind_and_time(tmp_path: Path) -> None:
    async with serving(tmp_path) as (server, _):
        events = await get_json(server, "/api/events")
        assert [e["kind"] for e in events] == ["csms_up", "csms_down", "fault_cleared", "fault_raised"]
        assert events[2] == {
            "at": "2026-03-02T09:05:00.000Z",
            "kind": "fault_cleared",
            "connector_id": 1,
            "device": "left",
            "detail": {"kind": "over_temperature", "duration_s": 300.0},
        }
        both = await get_json(server, "/api/events?kind=fault_raised,fault_cleared&since=2026-03-02")
        assert [e["kind"] for e in both] == ["fault_cleared", "fault_raised"]
        repeated = await get_json(server, "/api/events?kind=csms_up&kind=csms_down&limit=1")
        assert [e["kind"] for e in repeated] == ["csms_up"]
        assert await get_json(server, "/api/events?connector=1&kind=csms_up") == []
        status, _, text = await get(server, "/api/events?kind=csms_up,exploded")
        assert status == 400 and text.startswith("400: kind: 'exploded' is no event kind (known: fault_raised,")
        status, _, text = await get(server, "/api/events?id_tag=x")
        assert status == 400 and text.startswith("400: 'id_tag': no such parameter here")


async def test_series_default_to_the_last_24_hours_oldest_first(tmp_path: Path) -> None:
    async with serving(tmp_path) as (server, store):
        assert store is not None
        store.write([SeriesSample(NOW - timedelta(hours=30), 1, 1.0, 1, "available", None)])  # older than a day
        series = await get_json(server, "/api/series")
        assert len(series) == 170 * 3
        assert series[0] == {
            "minute": "2026-03-03T09:00:00.000Z",
            "connector_id": 0,
            "power_w": 9000.0,
            "energy_wh": None,
            "status": None,
            "limit_a": 32.0,
        }
        assert [s["minute"] for s in series] == sorted(s["minute"] for s in series)
        one = await get_json(server, "/api/series?connector=1&limit=5")
        assert [s["minute"][11:16] for s in one] == ["11:55", "11:56", "11:57", "11:58", "11:59"]  # the newest 5
        old = await get_json(server, "/api/series?since=2026-03-02&until=2026-03-03")
        assert [s["power_w"] for s in old] == [1.0]
        assert (await get(server, "/api/series?connector=1&id_tag=x"))[0] == 400


# -- without a history, and with a store that fails ------------------------------------------------
async def test_without_a_history_its_paths_are_404_saying_so_and_the_page_has_no_history(tmp_path: Path) -> None:
    async with serving(tmp_path, history=False) as (server, _):
        for path in ("/api/sessions", "/api/sessions.csv", "/api/events", "/api/series?limit=0"):
            status, _, text = await get(server, path)
            assert (status, text) == (404, "404: the history is off ([history] enabled = false)\n")
        status, _, page = await get(server, "/")
        picture = await get_json(server, "/api/status")
        metrics = (await get(server, "/metrics"))[2]
    assert status == 200 and "Last 24 hours" not in page and "Recent sessions" not in page and "<svg" not in page
    assert picture["history"] == {"enabled": False, "problems": []}
    assert "history_problems" not in metrics


async def test_a_store_that_cannot_be_read_is_a_503_and_the_page_says_so(tmp_path: Path) -> None:
    async with serving(tmp_path) as (server, _):
        with sqlite3.connect(tmp_path / "history" / FILE_NAME) as db:  # someone broke the file's tables
            db.execute("DROP TABLE sessions")
            db.execute("DROP TABLE events")
        for path in ("/api/sessions", "/api/sessions.csv", "/api/events"):
            status, _, text = await get(server, path)
            assert status == 503 and text.startswith("503: the history cannot be read now: history: no such table")
        assert (await get(server, "/api/series"))[0] == 200  # the series are still there
        status, _, page = await get(server, "/")
    assert status == 200 and "the history cannot be read now" in page and 'id="connector-1"' in page


# -- the status page ---------------------------------------------------------------------------------
async def test_the_page_shows_the_plot_sparklines_sessions_events_version_and_uptime(tmp_path: Path) -> None:
    async with serving(tmp_path) as (server, _):
        status, _, page = await get(server, "/")
        picture = await get_json(server, "/api/status")
    assert status == 200
    assert picture["gateway"] == {"version": __version__, "started_at": "2026-03-03T10:00:00.000Z", "uptime_s": 7200}
    assert f"ocpp-gateway {__version__}, up 2 h 00 min" in page
    plot = page[page.index("<section class=wide id=plot>") :]
    plot = plot[: plot.index("</section>")]
    # the gap of 10 minutes splits every line in two
    assert plot.count("<polyline data-line='site' ") == 2 and plot.count("<polyline data-line='grid' ") == 2
    assert plot.count("<polyline data-line='limit' ") == 2 and "stroke-dasharray" in plot
    assert "A \u00d7 230 V \u00d7 3" in plot and "kW" in plot and "hours" in plot
    assert page.count("<svg class='spark' ") == 2  # connector 1 and 2
    card = page[page.index('id="connector-1"') :]
    assert "peak 4.0 kW" in card[: card.index("</section>")]
    sessions = page[page.index("id=sessions-table") : page.index("</table>", page.index("id=sessions-table"))]
    assert sessions.count("<tr>") == 4  # the head and three sessions
    assert "****E5F6" in sessions and TAG not in page and EVIL_TAG not in page
    assert "<time datetime='2026-03-01T08:00:00.000Z'>2026-03-01 08:00 UTC</time>" in sessions
    assert "7.40 kWh" in sessions and "1 h 00 min" in sessions and "parked (refused by the CSMS)" in sessions
    assert "running" in sessions
    events = page[page.index("id=events-table") :]
    assert "Fault cleared on connector 1 (left): Overheating" in events and "lasted: 5 min" in events
    assert "Link to the CSMS lost" in events and "reason: connection refused" in events
    assert "<script id=local-times>" in page


async def test_a_history_file_set_aside_is_shown_on_the_page_and_in_the_status(tmp_path: Path) -> None:
    folder = tmp_path / "history"
    folder.mkdir()
    (folder / FILE_NAME).write_bytes(b"this is no database" * 100)
    async with serving(tmp_path, fill=False) as (server, _):
        _, _, page = await get(server, "/")
        picture = await get_json(server, "/api/status")
        metrics = (await get(server, "/metrics"))[2]
    assert "\nocpp_gateway_history_problems 1\n" in metrics
    (problem,) = picture["history"]["problems"]
    assert problem.startswith("history file unusable") and "a fresh one was started" in problem
    overview = page[page.index("id=overview") : page.index("</section>", page.index("id=overview"))]
    assert "history file unusable" in overview
    assert "No sessions yet." in page and "Nothing happened yet." in page and "no samples" in page


async def test_the_page_reads_the_series_once_a_minute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """And a new minute's drawing is made in the background: no page waits for it but the first."""
    async with serving(tmp_path) as (server, store):
        assert store is not None
        reads: list[object] = []
        slow = threading.Event()
        series: Callable[..., Any] = store.series

        def counted(query: object) -> Any:
            reads.append(query)
            if len(reads) > 1:
                assert slow.wait(10)  # the second minute's read hangs until the test lets it go
            return series(query)

        monkeypatch.setattr(store, "series", counted)
        for _ in range(3):
            assert (await get(server, "/"))[0] == 200
        assert len(reads) == 1
        clock = server.site.clock
        assert isinstance(clock, StepClock)
        clock.advance(60)
        async with asyncio.timeout(5):  # while the new drawing hangs, pages still come, with the old one
            for _ in range(3):
                status, _, text = await get(server, "/")
                assert status == 200 and "<svg" in text
        assert len(reads) == 2  # one redraw, however many pages asked meanwhile
        slow.set()
        redrawing = server.history._redrawing
        assert redrawing is not None
        await asyncio.wait_for(asyncio.shield(redrawing), 5)
        await get(server, "/")
        assert server.history._drawing is not None and server.history._drawing[0] == NOW.replace(second=0) + timedelta(
            minutes=1
        )
