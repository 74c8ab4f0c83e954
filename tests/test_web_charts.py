"""The SVG charts: accessible structure, escaping, a data table with every value, no inline
styles, series told apart without colour."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence

import pytest
from markupsafe import Markup

from hub.web.charts import Series, bar_chart, line_chart

SVG = "{http://www.w3.org/2000/svg}"
Chart = Callable[[str, str, Sequence[str], Sequence[Series], str], Markup]
KINDS: list[Chart] = [bar_chart, line_chart]


def parse(markup: Markup) -> ET.Element:
    """The chart as an element tree: it must be well-formed XML as well as HTML."""
    return ET.fromstring(str(markup))


@pytest.mark.parametrize("chart", KINDS)
def test_figure_holds_a_labelled_svg_and_a_table(chart: Chart) -> None:
    figure = parse(
        chart(
            "Blocked",
            "Blocked attempts per day",
            ["Mon", "Tue"],
            [Series("Gambling", (3, 4))],
            "attempts",
        )
    )
    assert figure.tag == "figure"
    svg = figure.find(f"{SVG}svg")
    assert svg is not None
    assert svg.get("role") == "img"
    ids = (svg.get("aria-labelledby") or "").split()
    title = svg.find(f"{SVG}title")
    desc = svg.find(f"{SVG}desc")
    assert title is not None and desc is not None
    assert ids == [title.get("id"), desc.get("id")]
    assert title.text == "Blocked"
    assert desc.text == "Blocked attempts per day"
    table = figure.find(".//table")
    assert table is not None
    caption = table.find("caption")
    assert caption is not None and "Blocked" in (caption.text or "")
    heads = table.findall("./thead/tr/th")
    assert [h.get("scope") for h in heads] == ["col", "col"]
    assert heads[1].text == "Gambling (attempts)"
    rows = table.findall("./tbody/tr")
    assert [(r[0].get("scope"), r[0].text, r[1].text) for r in rows] == [
        ("row", "Mon", "3"),
        ("row", "Tue", "4"),
    ]


@pytest.mark.parametrize("chart", KINDS)
def test_every_label_is_escaped(chart: Chart) -> None:
    evil = '<script>alert("x")</script>&'
    out = str(chart(evil, evil, [evil], [Series(evil, (1,))], evil))
    assert "<script>" not in out
    assert "&lt;script&gt;" in out
    parse(Markup(out))  # still well-formed


@pytest.mark.parametrize("chart", KINDS)
def test_no_inline_style_or_script(chart: Chart) -> None:
    out = str(
        chart("t", "d", ["a", "b", "c"], [Series("x", (1, 2, 3)), Series("y", (0, 1, 0))], "")
    )
    assert "style=" not in out
    assert "<style" not in out
    assert "<script" not in out
    assert "on" + "click" not in out


@pytest.mark.parametrize("chart", KINDS)
def test_mismatched_lengths_are_refused(chart: Chart) -> None:
    with pytest.raises(ValueError, match="2 values for 3 labels"):
        chart("t", "d", ["a", "b", "c"], [Series("x", (1, 2))], "")


@pytest.mark.parametrize("chart", KINDS)
def test_negative_values_are_refused(chart: Chart) -> None:
    with pytest.raises(ValueError, match="negative"):
        chart("t", "d", ["a"], [Series("x", (-1,))], "")


@pytest.mark.parametrize("chart", KINDS)
def test_empty_and_all_zero_data_still_render(chart: Chart) -> None:
    parse(chart("t", "d", [], [], ""))
    figure = parse(chart("t", "d", ["a"], [Series("x", (0,))], ""))
    assert figure.find(".//table/tbody/tr/td") is not None


def test_two_charts_on_one_page_have_distinct_ids() -> None:
    first = parse(bar_chart("a", "d", ["x"], [Series("s", (1,)), Series("t", (2,))], ""))
    second = parse(bar_chart("b", "d", ["x"], [Series("s", (1,)), Series("t", (2,))], ""))
    ids_first = {e.get("id") for e in first.iter() if e.get("id")}
    ids_second = {e.get("id") for e in second.iter() if e.get("id")}
    assert ids_first and ids_second
    assert not ids_first & ids_second


def test_bar_series_differ_by_pattern_not_only_colour() -> None:
    figure = parse(bar_chart("t", "d", ["a"], [Series("s", (1,)), Series("t", (2,))], ""))
    bars = figure.findall(f".//{SVG}g[@class='chart-bars']/{SVG}rect")
    assert len(bars) == 2
    fills = [b.get("fill") for b in bars]
    assert fills[0] is None  # solid, from the stylesheet
    assert fills[1] is not None and fills[1].startswith("url(#")
    pattern_id = fills[1][len("url(#") : -1]
    assert figure.find(f".//{SVG}pattern[@id='{pattern_id}']") is not None


def test_line_series_differ_by_marker_and_dash() -> None:
    series = [Series("s", (1, 2)), Series("t", (2, 1))]
    figure = parse(line_chart("t", "d", ["a", "b"], series, ""))
    groups = figure.findall(f".//{SVG}g[@class='chart-series']")
    assert len(groups) == 2
    shapes = [[child.tag for child in g if child.tag != f"{SVG}title"] for g in groups]
    assert shapes[0] != shapes[1]
    lines = [g.find(f"{SVG}polyline") for g in groups]
    assert lines[0] is not None and lines[1] is not None
    assert lines[0].get("stroke-dasharray") != lines[1].get("stroke-dasharray")


def test_bar_heights_follow_the_values() -> None:
    figure = parse(bar_chart("t", "d", ["a", "b"], [Series("s", (1, 4))], ""))
    bars = figure.findall(f".//{SVG}g[@class='chart-bars']/{SVG}rect")
    heights = [float(b.get("height") or 0) for b in bars]
    assert heights[1] == pytest.approx(heights[0] * 4)


def test_long_x_axis_labels_are_thinned_but_the_table_keeps_all() -> None:
    days = [f"day {n}" for n in range(30)]
    figure = parse(
        line_chart("t", "d", days, [Series("s", tuple(float(n) for n in range(30)))], "")
    )
    shown = [
        t.text
        for g in figure.findall(f".//{SVG}g[@class='chart-axis']")
        for t in g.findall(f"{SVG}text")
        if (t.text or "").startswith("day")
    ]
    assert 0 < len(shown) <= 12
    assert len(figure.findall(".//table/tbody/tr")) == 30


def test_thirty_dates_do_not_overlap_under_the_plot() -> None:
    """A 30-day chart's date labels (10 characters each) are spaced at least their own width
    apart (about 7 px a character at 12 px)."""
    days = [f"2026-11-{n:02d}" for n in range(1, 31)]
    figure = parse(
        line_chart("t", "d", days, [Series("s", tuple(float(n) for n in range(30)))], "")
    )
    xs = [
        float(t.get("x", "0"))
        for g in figure.findall(f".//{SVG}g[@class='chart-axis']")
        for t in g.findall(f"{SVG}text")
        if (t.text or "").startswith("2026-")
    ]
    assert len(xs) >= 4
    assert min(b - a for a, b in itertools.pairwise(xs)) >= 10 * 7


def test_numbers_are_written_plainly() -> None:
    figure = parse(bar_chart("t", "d", ["a", "b"], [Series("s", (1234.0, 0.5))], ""))
    cells = [td.text for td in figure.findall(".//table/tbody/tr/td")]
    assert cells == ["1,234", "0.5"]
