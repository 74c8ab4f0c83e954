"""Server-rendered SVG charts: each a <figure> with an accessible inline SVG and a table of the
same numbers beside it, so a chart reads without JavaScript, colour or sight, and prints."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH = 640
HEIGHT = 280
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 16, 16, 56
_PLOT_W = WIDTH - _LEFT - _RIGHT
_PLOT_H = HEIGHT - _TOP - _BOTTOM
_MAX_X_LABELS = 12
_CHAR_W = 7  # an x label's width per character, at the 12 px font of hedgerow.css
# Fill patterns and line markers tell series apart without colour; colour only repeats them.
_PATTERNS = ("solid", "hatch", "dots", "cross", "vertical", "grid")
_MARKERS = ("circle", "square", "triangle", "diamond", "cross", "bar")
_DASHES = ("", "6 3", "2 3", "8 3 2 3", "1 2", "10 4")
_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Series:
    """One named run of numbers, one value per category or x label."""

    label: str
    values: tuple[float, ...]


def _number(value: float) -> str:
    """A value as people read it: whole numbers without a decimal point."""
    if math.isfinite(value) and value == int(value):
        return f"{int(value):,}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def _with_unit(value: float, unit: str) -> str:
    return f"{_number(value)} {unit}".rstrip()


def _nice_max(largest: float) -> float:
    """A round upper bound for the value axis (1, 2 or 5 times a power of ten)."""
    if largest <= 0 or not math.isfinite(largest):
        return 1.0
    power = 10 ** math.floor(math.log10(largest))
    for step in (1, 2, 5, 10):
        if largest <= step * power:
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def _check(kind: str, labels: Sequence[str], series: Sequence[Series]) -> None:
    for one in series:
        if len(one.values) != len(labels):
            raise ValueError(
                f"{kind}: series {one.label!r} has {len(one.values)} values "
                f"for {len(labels)} labels"
            )
        if any(not math.isfinite(v) or v < 0 for v in one.values):
            raise ValueError(f"{kind}: series {one.label!r} has a negative or non-finite value")


def _largest(series: Sequence[Series]) -> float:
    return max((v for one in series for v in one.values), default=0.0)


def _y(value: float, top: float) -> float:
    return _TOP + _PLOT_H - (value / top) * _PLOT_H


def _defs(prefix: str) -> str:
    """The fill patterns, one per series slot, ids unique to this chart."""
    shapes = {
        "hatch": '<path d="M0,8 L8,0" class="pat-line"/>',
        "dots": '<circle cx="4" cy="4" r="1.6" class="pat-dot"/>',
        "cross": '<path d="M0,8 L8,0 M0,0 L8,8" class="pat-line"/>',
        "vertical": '<path d="M4,0 L4,8" class="pat-line"/>',
        "grid": '<path d="M0,4 L8,4 M4,0 L4,8" class="pat-line"/>',
    }
    parts = ["<defs>"]
    for index, name in enumerate(_PATTERNS):
        if name == "solid":
            continue
        parts.append(
            f'<pattern id="{prefix}-p{index}" width="8" height="8" '
            f'patternUnits="userSpaceOnUse" class="chart-s{index}">'
            f'<rect width="8" height="8" class="pat-bg"/>{shapes[name]}</pattern>'
        )
    parts.append("</defs>")
    return "".join(parts)


def _fill(prefix: str, index: int) -> str:
    slot = index % len(_PATTERNS)
    if _PATTERNS[slot] == "solid":
        return f'class="bar chart-s{slot}"'
    return f'class="bar chart-s{slot}" fill="url(#{prefix}-p{slot})"'


def _value_axis(top: float, unit: str) -> str:
    parts = ['<g class="chart-axis" aria-hidden="true">']
    for tick in range(5):
        value = top * tick / 4
        y = _y(value, top)
        parts.append(
            f'<line x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
            'class="chart-grid"/>'
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(_number(value))}</text>"
        )
    if unit:
        parts.append(f'<text x="4" y="{_TOP - 4}" class="chart-unit">{escape(unit)}</text>')
    parts.append("</g>")
    return "".join(parts)


def _x_label(x: float, text: str) -> str:
    return (
        f'<text x="{x:.1f}" y="{HEIGHT - _BOTTOM + 16}" text-anchor="middle">{escape(text)}</text>'
    )


def _x_labels(positions: Sequence[float], labels: Sequence[str]) -> str:
    """Category labels under the plot; past a dozen, or past what fits side by side at their
    length (about 7 px a character, 12 px apart), every nth (the table has them all)."""
    longest = max((len(label) for label in labels), default=1)
    fit = max(1, int(_PLOT_W // (longest * _CHAR_W + 12)))
    step = max(1, math.ceil(len(labels) / min(_MAX_X_LABELS, fit)))
    parts = ['<g class="chart-axis" aria-hidden="true">']
    for index in range(0, len(labels), step):
        parts.append(_x_label(positions[index], labels[index]))
    parts.append("</g>")
    return "".join(parts)


def _legend(prefix: str, series: Sequence[Series], kind: str) -> str:
    parts = ['<g class="chart-legend" aria-hidden="true">']
    x = float(_LEFT)
    y = HEIGHT - 18
    for index, one in enumerate(series):
        if kind == "bar":
            parts.append(f'<rect x="{x:.1f}" y="{y - 10}" width="14" height="14" ')
            parts.append(f"{_fill(prefix, index)}/>")
        else:
            slot = index % len(_MARKERS)
            parts.append(_line_key(x, y - 3, slot))
        parts.append(f'<text x="{x + 20:.1f}" y="{y + 2}">{escape(one.label)}</text>')
        x += 28 + 7 * len(one.label)
    parts.append("</g>")
    return "".join(parts)


def _marker(x: float, y: float, slot: int) -> str:
    shape = _MARKERS[slot]
    cls = f'class="marker chart-s{slot}"'
    if shape == "circle":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" {cls}/>'
    if shape == "square":
        return f'<rect x="{x - 3.5:.1f}" y="{y - 3.5:.1f}" width="7" height="7" {cls}/>'
    if shape == "triangle":
        return f'<path d="M{x:.1f},{y - 4.5:.1f} l4.5,8 h-9 z" {cls}/>'
    if shape == "diamond":
        return f'<path d="M{x:.1f},{y - 4.5:.1f} l4.5,4.5 l-4.5,4.5 l-4.5,-4.5 z" {cls}/>'
    if shape == "cross":
        return f'<path d="M{x - 4:.1f},{y - 4:.1f} l8,8 m0,-8 l-8,8" {cls}/>'
    return f'<rect x="{x - 1.5:.1f}" y="{y - 5:.1f}" width="3" height="10" {cls}/>'


def _line_key(x: float, y: float, slot: int) -> str:
    dash = f' stroke-dasharray="{_DASHES[slot]}"' if _DASHES[slot] else ""
    return (
        f'<line x1="{x:.1f}" x2="{x + 14:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
        f'class="line chart-s{slot}"{dash}/>' + _marker(x + 7, y, slot)
    )


def _table(
    caption: str, head: str, labels: Sequence[str], series: Sequence[Series], unit: str
) -> str:
    suffix = f" ({escape(unit)})" if unit else ""
    parts = [
        '<div class="scroll"><table class="chart-data">',
        f"<caption>{escape(caption)}: data</caption><thead><tr>",
        f'<th scope="col">{escape(head)}</th>',
    ]
    parts.extend(f'<th scope="col">{escape(one.label)}{suffix}</th>' for one in series)
    parts.append("</tr></thead><tbody>")
    for index, label in enumerate(labels):
        parts.append(f'<tr><th scope="row">{escape(label)}</th>')
        parts.extend(f"<td>{escape(_number(one.values[index]))}</td>" for one in series)
        parts.append("</tr>")
    parts.append("</tbody></table></div>")
    return "".join(parts)


def _figure(kind: str, prefix: str, title: str, description: str, body: str, table: str) -> Markup:
    return Markup(
        f'<figure class="chart chart-{kind}">'
        f'<svg role="img" aria-labelledby="{prefix}-t {prefix}-d" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" class="chart-svg" '
        'xmlns="http://www.w3.org/2000/svg" focusable="false">'
        f'<title id="{prefix}-t">{escape(title)}</title>'
        f'<desc id="{prefix}-d">{escape(description)}</desc>'
        f"{_defs(prefix) if kind == 'bar' else ''}{body}</svg>"
        f"<figcaption>{escape(title)}</figcaption>{table}</figure>"
    )


def bar_chart(
    title: str,
    description: str,
    categories: Sequence[str],
    series: Sequence[Series],
    unit: str = "",
) -> Markup:
    """Grouped bars, one group per category, one patterned bar per series."""
    _check("bar_chart", categories, series)
    prefix = f"chart{next(_ids)}"
    top = _nice_max(_largest(series))
    group = _PLOT_W / max(1, len(categories))
    bar = group * 0.8 / max(1, len(series))
    parts = [_value_axis(top, unit), '<g class="chart-bars">']
    for c_index, category in enumerate(categories):
        for s_index, one in enumerate(series):
            value = one.values[c_index]
            x = _LEFT + c_index * group + group * 0.1 + s_index * bar
            y = _y(value, top)
            label = f"{one.label}, {category}: {_with_unit(value, unit)}"
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bar - 1, 1):.1f}" '
                f'height="{_TOP + _PLOT_H - y:.1f}" {_fill(prefix, s_index)}>'
                f"<title>{escape(label)}</title></rect>"
            )
    parts.append("</g>")
    centres = [_LEFT + (i + 0.5) * group for i in range(len(categories))]
    parts.append(_x_labels(centres, categories))
    parts.append(_legend(prefix, series, "bar"))
    table = _table(title, "Category", categories, series, unit)
    return _figure("bar", prefix, title, description, "".join(parts), table)


def line_chart(
    title: str,
    description: str,
    x_labels: Sequence[str],
    series: Sequence[Series],
    unit: str = "",
) -> Markup:
    """One line per series over the x labels, each with its own dash and marker shape."""
    _check("line_chart", x_labels, series)
    prefix = f"chart{next(_ids)}"
    top = _nice_max(_largest(series))
    count = len(x_labels)
    step = _PLOT_W / max(1, count - 1)
    xs = [_LEFT + (i * step if count > 1 else _PLOT_W / 2) for i in range(count)]
    parts = [_value_axis(top, unit), '<g class="chart-lines">']
    for s_index, one in enumerate(series):
        slot = s_index % len(_MARKERS)
        points = " ".join(f"{x:.1f},{_y(v, top):.1f}" for x, v in zip(xs, one.values, strict=True))
        dash = f' stroke-dasharray="{_DASHES[slot]}"' if _DASHES[slot] else ""
        parts.append(f'<g class="chart-series"><title>{escape(one.label)}</title>')
        if count > 1:
            parts.append(f'<polyline points="{points}" class="line chart-s{slot}"{dash}/>')
        for x, value in zip(xs, one.values, strict=True):
            parts.append(_marker(x, _y(value, top), slot))
        parts.append("</g>")
    parts.append("</g>")
    parts.append(_x_labels(xs, x_labels))
    parts.append(_legend(prefix, series, "line"))
    table = _table(title, "When", x_labels, series, unit)
    return _figure("line", prefix, title, description, "".join(parts), table)
