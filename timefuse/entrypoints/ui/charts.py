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
