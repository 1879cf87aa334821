"""The status page's plots (adapters.web.plot): well-formed SVG, a line broken at every gap, a dot
for a sample alone, and an axis that survives no data, one point and absurd values."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ElementTree
from datetime import UTC, datetime, timedelta

import pytest

from adapters.web.plot import Line, Point, plot, segments, sparkline

END = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
START = END - timedelta(hours=24)
NS = {"svg": "http://www.w3.org/2000/svg"}


def minutes(values: list[float | None], first: datetime = END - timedelta(minutes=60)) -> list[Point]:
    return [(first + timedelta(minutes=i), v) for i, v in enumerate(values)]


def parsed(svg: str) -> ElementTree.Element:
    root = ElementTree.fromstring(svg)  # well-formed XML: it could be saved as an .svg file as it is
    assert root.tag == "{http://www.w3.org/2000/svg}svg" and root.get("viewBox")
    assert "width:100%" in (root.get("style") or "")  # scales to the page's width
    return root


def drawn(root: ElementTree.Element, key: str) -> tuple[list[list[tuple[float, float]]], int]:
    """The polylines of line ``key`` as lists of points, and how many dots it has."""
    lines = [
        [tuple(map(float, xy.split(","))) for xy in (p.get("points") or "").split()]
        for p in root.iterfind("svg:polyline", NS)
        if p.get("data-line") == key
    ]
    dots = sum(1 for c in root.iterfind("svg:circle", NS) if c.get("data-line") == key)
    return lines, dots  # type: ignore[return-value]


def texts(root: ElementTree.Element) -> list[str]:
    return [t.text or "" for t in root.iterfind("svg:text", NS)]


def test_a_line_breaks_at_each_gap_and_a_lone_sample_is_a_dot() -> None:
    # 3 samples, a missing minute, 2 samples, a None, 1 sample alone, then 2 more after a gap
    values: list[float | None] = [1000.0, 2000.0, 3000.0]
    points = minutes(values) + minutes([4000.0, 5000.0, None, 6000.0], END - timedelta(minutes=56))
    points += minutes([7000.0, 8000.0], END - timedelta(minutes=40))
    root = parsed(plot([Line("site", "#00f", points)], START, END, title="t"))
    lines, dots = drawn(root, "site")
    assert [len(line) for line in lines] == [3, 2, 2] and dots == 1
    # later is further right; more power is higher up (smaller y)
    first = lines[0]
    assert first[0][0] < first[1][0] < first[2][0] and first[0][1] > first[1][1] > first[2][1]


def test_the_axis_says_kw_and_hours_and_reaches_beyond_the_highest_value() -> None:
    root = parsed(plot([Line("grid", "#f00", minutes([7_400.0, 11_000.0]))], START, END, title="Power"))
    labels = texts(root)
    assert "kW" in labels and "hours" in labels and "-24 h" in labels and "now" in labels
    ticks = [float(t) for t in labels if t.replace(".", "").isdigit()]
    assert min(ticks) == 0 and max(ticks) >= 11 and len(ticks) <= 7
    assert root.find("svg:title", NS) is not None and root.find("svg:title", NS).text == "Power"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "points",
    [[], minutes([None, None, None]), minutes([math.nan, math.inf]), [(START - timedelta(hours=1), 5.0)]],
    ids=["empty", "all None", "not finite", "outside the window"],
)
def test_no_samples_draw_axes_and_say_so(points: list[Point]) -> None:
    root = parsed(plot([Line("site", "#00f", points)], START, END, title="t"))
    assert drawn(root, "site") == ([], 0)
    assert "no samples" in texts(root)
    assert sparkline([Line("site", "#00f", points)], START, END, title="t") == ""


def test_one_point_is_a_dot() -> None:
    root = parsed(plot([Line("site", "#00f", [(END - timedelta(hours=3), 2_000.0)])], START, END, title="t"))
    assert drawn(root, "site") == ([], 1)
    spark = parsed(sparkline([Line("p", "#00f", [(END, 0.0)])], START, END, title="t"))
    assert drawn(spark, "p") == ([], 1)


def test_huge_and_negative_values_keep_the_plot_inside_its_box() -> None:
    points = minutes([1e300, -1e300, 4e9, -5_000.0])
    root = parsed(plot([Line("grid", "#f00", points)], START, END, title="t"))
    (line,), _ = drawn(root, "grid")
    assert all(0 <= y <= 220 for _, y in line), line  # the viewBox is 220 high
    labels = texts(root)
    assert all(len(t) <= 8 for t in labels)  # short tick labels, whatever the values
    exported = parsed(plot([Line("grid", "#f00", minutes([-3_000.0, 2_000.0]))], START, END, title="t"))
    assert "-3" in texts(exported) and "0" in texts(exported)  # exported power: the axis goes below zero


def test_a_dashed_line_and_a_sparkline_with_two_lines() -> None:
    power = Line("power", "#00f", minutes([1000.0, 2000.0]))
    share = Line("share", "#777", minutes([6900.0, 6900.0]), dashed=True)
    root = parsed(sparkline([power, share], START, END, title="Connector 1"))
    (shared,), _ = drawn(root, "share")
    polylines = {p.get("data-line"): p for p in root.iterfind("svg:polyline", NS)}
    assert polylines["share"].get("stroke-dasharray") and not polylines["power"].get("stroke-dasharray")
    assert shared[0][1] == shared[1][1]  # a flat share is a flat line
    assert root.get("class") == "spark"


def test_segments_keep_order_and_split_at_more_than_a_minute_and_a_half() -> None:
    points = [(START + timedelta(seconds=s), 1.0) for s in (0, 60, 180, 240, 300)]
    runs = segments(points, START, END)
    assert [[int((t - START).total_seconds()) for t, _ in run] for run in runs] == [[0, 60], [180, 240, 300]]


def test_a_day_of_minutes_is_thinned_but_keeps_every_peak_and_dip() -> None:
    values = [1_000.0 + (i % 7) for i in range(24 * 60)]  # a little noise: no stretch is flat
    values[700], values[900] = 22_000.0, 0.0
    root = parsed(plot([Line("site", "#00f", minutes(values, START))], START, END, title="t"))
    (line,), _ = drawn(root, "site")
    assert len(line) <= 4 * 348 / 2  # at most four points per two units of the 348 wide frame
    assert len(line) < 24 * 60 / 2
    xs, ys = [x for x, _ in line], [y for _, y in line]
    assert xs == sorted(xs)
    # the axis goes to 25 kW over 138 units from y=26: 22 kW at 42.6, 0 kW at 164
    assert min(ys) == 42.6 and max(ys) == 164.0
    flat = parsed(plot([Line("site", "#00f", minutes([5_000.0] * 24 * 60, START))], START, END, title="t"))
    (level,), _ = drawn(flat, "site")
    assert len(level) == 2  # a flat line is drawn by its ends
