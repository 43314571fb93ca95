"""Charts drawn on the server as inline SVG: no script, no library, readable without either.

Every chart comes with a text alternative (its ``<title>`` and ``<desc>``) and its figures in
a table, so a screen reader or a text browser gets the same information.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

# Drawn near the size it is shown at (a third of a 1280 px page, or a phone), so its text
# keeps a readable size when the browser scales it to the width it has.
WIDTH = 360
HEIGHT = 150
_LEFT = 34  # room for the y-axis labels
_BOTTOM = 20  # room for the x-axis labels
_TOP = 8


@dataclass(frozen=True, slots=True)
class Series:
    """One chart: a value per minute, oldest first."""

    key: str  # used in element ids and the CSS class that colours the bars
    title: str
    values: Sequence[float]


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5 x 10^n at or above ``value`` (at least 1): a round axis top."""
    if value <= 1:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def bar_chart(series: Series) -> Markup:
    """A bar per minute, the newest on the right, with the axis top and time labels."""
    values = list(series.values)
    count = max(len(values), 1)
    top = nice_ceiling(max(values, default=0.0))
    plot_w = WIDTH - _LEFT - 4
    plot_h = HEIGHT - _BOTTOM - _TOP
    step = plot_w / count
    bars = []
    for index, value in enumerate(values):
        if value <= 0:
            continue
        height = max(plot_h * value / top, 1.0)
        x = _LEFT + index * step
        y = _TOP + plot_h - height
        minutes_ago = count - 1 - index
        bars.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(step - 1, 1):.1f}" '
            f'height="{height:.1f}"><title>{_number(value)} '
            f"{'this minute' if minutes_ago == 0 else f'{minutes_ago} min ago'}</title></rect>"
        )
    total = sum(values)
    peak = max(values, default=0.0)
    ident = f"chart-{series.key}"
    title = escape(series.title)
    baseline = _TOP + plot_h
    svg = (
        f'<svg class="chart chart-{series.key}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{ident}-t {ident}-d">'
        f'<title id="{ident}-t">{title} per minute, last {count} minutes</title>'
        f'<desc id="{ident}-d">{_number(total)} in all; at most {_number(peak)} in one '
        "minute.</desc>"
        f'<line class="axis" x1="{_LEFT}" y1="{baseline}" x2="{WIDTH - 4}" y2="{baseline}"/>'
        f'<line class="grid" x1="{_LEFT}" y1="{_TOP}" x2="{WIDTH - 4}" y2="{_TOP}"/>'
        f'<text class="label" x="{_LEFT - 6}" y="{_TOP + 4}" text-anchor="end">'
        f"{_number(top)}</text>"
        f'<text class="label" x="{_LEFT - 6}" y="{baseline}" text-anchor="end">0</text>'
        f'<text class="label" x="{_LEFT}" y="{HEIGHT - 4}">{count} min ago</text>'
        f'<text class="label" x="{_LEFT + plot_w / 2:.0f}" y="{HEIGHT - 4}" '
        f'text-anchor="middle">{count // 2} min ago</text>'
        f'<text class="label" x="{WIDTH - 4}" y="{HEIGHT - 4}" text-anchor="end">now</text>'
        f'<g class="bars">{"".join(bars)}</g></svg>'
    )
    # Only numbers and escaped text went in.
    return Markup(svg)


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a line chart: a value per minute (``None``: nothing that minute)."""

    key: str  # the CSS class that colours it
    label: str
    values: Sequence[float | None]


# Lateness runs from milliseconds (a healthy dispatcher) to an hour (a backlog): a log axis
# shows both. Decades from 1 ms to 1 h, with their labels.
_DECADES = ((0.001, "1 ms"), (0.01, "10 ms"), (0.1, "100 ms"), (1.0, "1 s"), (10.0, "10 s"),
            (100.0, "100 s"), (1000.0, "1000 s"), (10000.0, "10000 s"))  # fmt: skip
# Drawn near the size it is shown at (a column of the lateness card, or a phone's width).
LINE_WIDTH = 400
LINE_HEIGHT = 170


def log_line_chart(ident: str, title: str, lines: Sequence[Line], describe: str) -> Markup:
    """Lines over the last minutes on a log axis of seconds, newest on the right.

    A minute without a value breaks its line; a lone point is drawn as a dot. ``describe``
    is the chart's text alternative (its figures are also given in a table by the page).
    """
    shown = [v for line in lines for v in line.values if v is not None and v > 0]
    low = max(min(shown, default=0.001), 0.001)
    high = max(max(shown, default=1.0), low * 10)
    decades = [d for d in _DECADES if low / 10 < d[0] <= high * 10]
    bottom_value, top_value = decades[0][0], decades[-1][0]
    if bottom_value == top_value:
        top_value *= 10
    left, bottom, top = 52, _BOTTOM, _TOP
    plot_w = LINE_WIDTH - left - 6
    plot_h = LINE_HEIGHT - bottom - top
    span = math.log10(top_value) - math.log10(bottom_value)

    def y_of(value: float) -> float:
        clamped = min(max(value, bottom_value), top_value)
        return top + plot_h * (1 - (math.log10(clamped) - math.log10(bottom_value)) / span)

    count = max((len(line.values) for line in lines), default=1)
    step = plot_w / max(count - 1, 1)
    parts = [
        f'<svg class="chart line-chart" viewBox="0 0 {LINE_WIDTH} {LINE_HEIGHT}" role="img" '
        f'aria-labelledby="{ident}-t {ident}-d">'
        f'<title id="{ident}-t">{escape(title)}</title>'
        f'<desc id="{ident}-d">{escape(describe)}</desc>'
    ]
    for value, label in decades:
        y = y_of(value)
        parts.append(
            f'<line class="grid" x1="{left}" y1="{y:.1f}" x2="{LINE_WIDTH - 6}" y2="{y:.1f}"/>'
            f'<text class="label" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>'
        )
    baseline = top + plot_h
    parts.append(
        f'<line class="axis" x1="{left}" y1="{baseline}" x2="{LINE_WIDTH - 6}" y2="{baseline}"/>'
        f'<text class="label" x="{left}" y="{LINE_HEIGHT - 4}">{count} min ago</text>'
        f'<text class="label" x="{left + plot_w / 2:.0f}" y="{LINE_HEIGHT - 4}" '
        f'text-anchor="middle">{count // 2} min ago</text>'
        f'<text class="label" x="{LINE_WIDTH - 6}" y="{LINE_HEIGHT - 4}" text-anchor="end">now'
        "</text>"
    )
    for line in lines:
        parts.append(f'<g class="line {line.key}">')
        for run in _runs(line.values):
            points = [(left + index * step, y_of(value)) for index, value in run]
            if len(points) == 1:
                x, y = points[0]
                parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5"/>')
            else:
                text = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
                parts.append(f'<polyline points="{text}"/>')
        parts.append("</g>")
    parts.append("</svg>")
    # Only numbers and escaped text went in.
    return Markup("".join(parts))


def _runs(values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    """The stretches of consecutive minutes that have a value, with their positions."""
    runs: list[list[tuple[int, float]]] = []
    current: list[tuple[int, float]] = []
    for index, value in enumerate(values):
        if value is None:
            if current:
                runs.append(current)
            current = []
        else:
            current.append((index, value))
    if current:
        runs.append(current)
    return runs
