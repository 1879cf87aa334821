"""The history over HTTP: ``/api/sessions`` (JSON), ``/api/sessions.csv`` (the same rows as a
spreadsheet), ``/api/events``, ``/api/series``, and what the status page shows of it.

Reads run in worker threads (``History``'s async reads), and so does turning thousands of rows
into JSON or CSV: the event loop serves the chargers meanwhile. A store that cannot be read (it
raises ``OSError``) is a 503 that says so; without a history (``[history] enabled = false``) the
paths are a 404 that says why.

**Id tags** leave the box masked (``****1234``). Full tags only where the status page has a
password (every request is then authenticated before it gets here): ``id_tag_full`` in JSON, a
column of its own in CSV. Filtering by ``id_tag`` needs the password too: without one, anyone on
the LAN could try card numbers and learn which are known (403, saying so).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any, TypeVar

from aiohttp import web

from adapters.web.hardened import one_line
from adapters.web.history_page import HistoryView, SeriesDrawing, draw_series
from adapters.web.history_query import EVENTS, SERIES, SESSIONS, Accepted, history_query
from adapters.web.refused import Refused
from gateway.domain.history import MAX_ROWS, HistoryQuery, SessionRecord
from gateway.services.history import History
from gateway.services.history_report import csv_rows, session_fields

Row = TypeVar("Row")
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

PAGE_WINDOW = timedelta(hours=24)
PAGE_SESSIONS, PAGE_EVENTS = 20, 30


class HistoryApi:
    """The history's paths of one ``StatusServer`` (see the module docstring)."""

    def __init__(
        self, history: History | None, now: Callable[[], datetime], *, full_tags: bool, connectors: int
    ) -> None:
        """``full_tags``: the page has a password (its requests are authenticated); ``connectors``:
        how many the site has, which bounds the page's read of 24 hours of series."""
        self.history = history
        self.now = now
        self.full_tags = full_tags
        self.page_series_limit = min(MAX_ROWS, (24 * 60 + 1) * (connectors + 1))
        self._drawing: tuple[datetime, SeriesDrawing] | None = None  # the minute it was drawn for
        self._redrawing: asyncio.Task[tuple[datetime, SeriesDrawing]] | None = None

    def routes(self) -> dict[str, Handler]:
        return {
            "/api/sessions": self.sessions,
            "/api/sessions.csv": self.sessions_csv,
            "/api/events": self.events,
            "/api/series": self.series,
        }

    def state(self) -> dict[str, Any]:
        """For ``/api/status`` and the page: whether a history is kept and what is wrong with its file."""
        if self.history is None:
            return {"enabled": False, "problems": []}
        return {"enabled": True, "problems": [p.what for p in self.history.problems()]}

    # -- the API ------------------------------------------------------------------------------------
    async def sessions(self, request: web.BaseRequest) -> web.StreamResponse:
        history = self._history()
        rows = await _read(history.sessions, self._query(request, SESSIONS))
        return await _json([self.session_row(s) for s in rows])

    async def sessions_csv(self, request: web.BaseRequest) -> web.StreamResponse:
        history = self._history()
        rows = await _read(history.sessions, self._query(request, SESSIONS))
        text = await asyncio.to_thread(self.csv_text, rows)
        name = f"sessions-{self.now():%Y%m%dT%H%M%SZ}.csv"
        return web.Response(
            text=text,
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    async def events(self, request: web.BaseRequest) -> web.StreamResponse:
        history = self._history()
        rows = await _read(history.events, self._query(request, EVENTS))
        return await _json([asdict(e) for e in rows])

    async def series(self, request: web.BaseRequest) -> web.StreamResponse:
        history = self._history()
        rows = await _read(history.series, self._query(request, SERIES))
        return await _json([asdict(s) for s in rows])

    def session_row(self, session: SessionRecord) -> dict[str, Any]:
        """One session as the API shows it: the masked tag, and the full one only with a password."""
        return session_fields(session, full_tags=self.full_tags)

    def csv_text(self, sessions: Sequence[SessionRecord]) -> str:
        """The sessions as CSV (RFC 4180): a header row, then one row per session; none is empty."""
        out = io.StringIO()
        csv.writer(out).writerows(csv_rows(sessions, full_tags=self.full_tags))
        return out.getvalue()

    # -- the page -----------------------------------------------------------------------------------
    async def page_view(self) -> HistoryView | None:
        """What the status page shows of the history: the last sessions and events, and 24 hours
        of series, in ONE read of all connectors; None without a history. The series change once a
        minute, so they are read and drawn (in a worker thread) once a minute, and that drawing
        serves every page of the minute (the page reloads every few seconds). A new minute's
        drawing is made in the background while pages still get the last one: at 50 connectors
        it takes about half a second, which no page should wait for but the first."""
        if self.history is None:
            return None
        end = self.now()
        start = end - PAGE_WINDOW
        try:
            sessions = await self.history.sessions(HistoryQuery(limit=PAGE_SESSIONS))
            events = await self.history.events(HistoryQuery(limit=PAGE_EVENTS))
            drawing = await self._series_drawing(end.replace(second=0, microsecond=0))
        except OSError as exc:
            return HistoryView(start, end, error=f"the history cannot be read now: {one_line(exc)}")
        return HistoryView(start, end, sessions, events, drawing)

    async def _series_drawing(self, minute: datetime) -> SeriesDrawing:
        """The drawing of the 24 hours up to ``minute``, or the last one while it is being made."""
        if self._redrawing is not None and self._redrawing.done():
            task, self._redrawing = self._redrawing, None
            self._drawing = task.result()  # (a read that failed raises here, once)
        if self._drawing is not None and self._drawing[0] == minute:
            return self._drawing[1]
        if self._redrawing is None:
            self._redrawing = asyncio.create_task(self._draw(minute))
        if self._drawing is None:  # the first page: nothing older to show
            self._drawing = await asyncio.shield(self._redrawing)
            self._redrawing = None
        return self._drawing[1]

    async def _draw(self, minute: datetime) -> tuple[datetime, SeriesDrawing]:
        assert self.history is not None
        since = minute - PAGE_WINDOW
        series = await self.history.series(HistoryQuery(since=since, limit=self.page_series_limit))
        return minute, await asyncio.to_thread(draw_series, series, since, minute)

    # -- helpers ------------------------------------------------------------------------------------
    def _history(self) -> History:
        if self.history is None:
            raise Refused(404, "the history is off ([history] enabled = false)")
        return self.history

    def _query(self, request: web.BaseRequest, accepted: Accepted) -> HistoryQuery:
        return history_query(request.query, accepted, self.now(), tags_allowed=self.full_tags)


async def _read(read: Callable[[HistoryQuery], Awaitable[list[Row]]], query: HistoryQuery) -> list[Row]:
    try:
        return await read(query)
    except OSError as exc:
        raise Refused(503, f"the history cannot be read now: {one_line(exc)}") from None


async def _json(body: object) -> web.Response:
    """``body`` as JSON, encoded in a worker thread (100,000 rows take a while)."""
    text = await asyncio.to_thread(json.dumps, body, ensure_ascii=False)
    return web.Response(text=text, content_type="application/json")
