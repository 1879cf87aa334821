"""Plots of the one-minute series as inline SVG, drawn on the server: no script, no library, nothing
fetched from elsewhere (the page is served on a LAN that may have no internet, under a strict
Content-Security-Policy).

The SVG has a ``viewBox`` and no fixed size, so the page scales it to the width it has (a phone's
too). A line is broken wherever a minute has no sample (the gateway was stopped, the meter did
not answer): a line drawn across a gap would show power nobody measured. A sample alone between
two gaps is a dot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape

STEP_S = 60.0  # the series' step: samples further apart than 1.5 steps have a gap between them
GAP_S = 1.5 * STEP_S
COLUMN = 2.0  # viewBox units: see _thinned
CLIP = 1e12  # values beyond are drawn at it: a broken register's 1e300 W must not break the axis
Point = tuple[datetime, float | None]


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a plot: ``points`` in time order, values in the plot's base unit (W)."""

    key: str  # names the line in the SVG (``data-line``), for tests and styles
    colour: str
    points: Sequence[Point]
    dashed: bool = False


@dataclass(frozen=True, slots=True)
class _Frame:
    """Where the data goes in the viewBox, and the scales from data to it."""

    left: float
    top: float
    width: float
    height: float
    start: datetime
    span_s: float
    low: float
    high: float

    def x(self, moment: datetime) -> float:
        return self.left + self.width * (moment - self.start).total_seconds() / self.span_s

    def y(self, value: float) -> float:
        return self.top + self.height * (self.high - value) / (self.high - self.low)


def plot(lines: Sequence[Line], start: datetime, end: datetime, *, title: str, unit: str = "kW") -> str:
    """A plot of ``lines`` between ``start`` and ``end``, values divided by 1000 on the axis (W to
    ``unit``), hours before ``end`` along the bottom."""
    width, height = 400.0, 200.0
    scaled = [Line(line.key, line.colour, [(t, _kilo(v)) for t, v in line.points], line.dashed) for line in lines]
    values = [v for line in scaled for v in _values(line, start, end)]
    low, high, step = _axis(values)
    frame = _Frame(40, 26, width - 52, height - 62, start, max((end - start).total_seconds(), 1.0), low, high)
    parts = [f"<title>{escape(title)}</title>"]
    tick = low
    while tick <= high + step / 2:
        y = _r(frame.y(tick))
        parts.append(f"<line x1='{frame.left}' x2='{frame.left + frame.width}' y1='{y}' y2='{y}' stroke='#e5e7eb'/>")
        parts.append(f"<text x='{frame.left - 6}' y='{y + 4}' text-anchor='end'>{_number(tick)}</text>")
        tick += step
    parts.append(f"<text x='4' y='{frame.top - 12}'>{escape(unit)}</text>")
    hours = frame.span_s / 3600
    bottom = frame.top + frame.height
    for i in range(5):  # five ticks: -24 h, -18 h, ... now (for a 24 h plot)
        x = _r(frame.left + frame.width * i / 4)
        before = hours * (4 - i) / 4
        label = "now" if i == 4 else f"-{before:g} h"
        parts.append(f"<line x1='{x}' x2='{x}' y1='{frame.top}' y2='{bottom}' stroke='#f0f1f3'/>")
        parts.append(f"<text x='{x}' y='{bottom + 16}' text-anchor='middle'>{label}</text>")
    parts.append(f"<text x='{frame.left + frame.width / 2}' y='{height - 4}' text-anchor='middle'>hours</text>")
    if not values:
        middle = frame.top + frame.height / 2
        parts.append(f"<text x='{frame.left + frame.width / 2}' y='{middle}' text-anchor='middle'>no samples</text>")
    parts += [_draw(line, frame, 2.0) for line in scaled]
    return (
        f"<svg class='plot' viewBox='0 0 {width:g} {height:g}' role='img' font-size='13' fill='#5f6368' "
        f"style='width:100%;max-width:640px;height:auto;display:block' xmlns='http://www.w3.org/2000/svg'>{''.join(parts)}</svg>"
    )


def sparkline(lines: Sequence[Line], start: datetime, end: datetime, *, title: str) -> str:
    """A small plot without axes (zero at the bottom, or at the lowest value if below zero); ""
    when no line has a value between ``start`` and ``end``."""
    values = [v for line in lines for v in _values(line, start, end)]
    if not values:
        return ""
    width, height = 240.0, 40.0
    low, high = min([0.0, *values]), max([0.0, *values])
    if high == low:
        high = low + 1.0
    frame = _Frame(1, 3, width - 2, height - 6, start, max((end - start).total_seconds(), 1.0), low, high)
    base = _r(frame.y(max(low, 0.0)))
    return (
        f"<svg class='spark' viewBox='0 0 {width:g} {height:g}' role='img' "
        f"style='width:100%;height:auto;display:block' xmlns='http://www.w3.org/2000/svg'>"
        f"<title>{escape(title)}</title>"
        f"<line x1='1' x2='{width - 1}' y1='{base}' y2='{base}' stroke='#e5e7eb'/>"
        f"{''.join(_draw(line, frame, 1.5) for line in lines)}</svg>"
    )


def segments(points: Sequence[Point], start: datetime, end: datetime) -> list[list[tuple[datetime, float]]]:
    """The runs of ``points`` between ``start`` and ``end`` with a value and no gap inside."""
    runs: list[list[tuple[datetime, float]]] = []
    previous: datetime | None = None
    for moment, value in points:
        if not start <= moment <= end:
            continue
        if value is None or not math.isfinite(value):
            previous = None
            continue
        if previous is None or (moment - previous).total_seconds() > GAP_S or not runs:
            runs.append([])
        runs[-1].append((moment, max(-CLIP, min(CLIP, value))))
        previous = moment
    return runs


def _draw(line: Line, frame: _Frame, stroke_w: float) -> str:
    out = []
    dash = " stroke-dasharray='6 4'" if line.dashed else ""
    for run in segments(line.points, frame.start, _end(frame)):
        xy = _thinned([(frame.x(t), frame.y(v)) for t, v in run])
        if len(xy) == 1:
            out.append(
                f"<circle data-line='{line.key}' cx='{xy[0][0]}' cy='{xy[0][1]}' r='{stroke_w}' fill='{line.colour}'/>"
            )
        else:
            points = " ".join(f"{x:g},{y:g}" for x, y in xy)
            out.append(
                f"<polyline data-line='{line.key}' points='{points}' fill='none' stroke='{line.colour}' "
                f"stroke-width='{stroke_w}'{dash} stroke-linejoin='round'/>"
            )
    return "".join(out)


def _thinned(xy: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """At most four points per ``COLUMN`` of width: the first, lowest, highest and last, in their
    order. A day of minutes is 1,440 points on a plot some 350 units wide: the shape stays (every
    peak and dip is kept), the page gets far smaller and quicker to draw. Rounded to 0.1 unit,
    and flat stretches are drawn by their ends."""
    out: list[tuple[float, float]] = []
    column: list[tuple[float, float]] = []
    for point in xy:
        if column and int(point[0] // COLUMN) != int(column[0][0] // COLUMN):
            out += _extremes(column)
            column = []
        column.append(point)
    out += _extremes(column)
    rounded = [(_r(x), _r(y)) for x, y in out]
    # a point level with both its neighbours adds nothing to the line (flat stretches are common)
    return [
        p
        for i, p in enumerate(rounded)
        if not 0 < i < len(rounded) - 1 or not rounded[i - 1][1] == p[1] == rounded[i + 1][1]
    ]


def _extremes(column: list[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(column) <= 4:
        return column
    low, high = min(column, key=lambda p: p[1]), max(column, key=lambda p: p[1])
    inner = sorted({low, high}, key=lambda p: p[0])
    return [column[0], *(p for p in inner if p not in (column[0], column[-1])), column[-1]]


def _end(frame: _Frame) -> datetime:
    return frame.start + timedelta(seconds=frame.span_s)


def _values(line: Line, start: datetime, end: datetime) -> list[float]:
    return [v for run in segments(line.points, start, end) for _, v in run]


def _kilo(value: float | None) -> float | None:
    return None if value is None else value / 1000


def _axis(values: Sequence[float]) -> tuple[float, float, float]:
    """The axis' lowest and highest tick and the step between ticks: 1, 2 or 5 times a power of
    ten, at most 5 steps, zero always on the axis."""
    low, high = min([0.0, *values]), max([0.0, *values])
    span = high - low or 1.0
    raw = span / 5
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return math.floor(low / step) * step, math.ceil(high / step) * step or step, step


def _number(value: float) -> str:
    """An axis label: short, whatever the value (``1e+12`` rather than thirteen digits)."""
    if abs(value) < 1e-9:
        return "0"
    return f"{value:.3g}" if abs(value) >= 1e5 else f"{round(value, 6):g}"


def _r(value: float) -> float:
    return round(value, 1)
