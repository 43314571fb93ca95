"""Jinja2 templates shipped in the package, with the filters the pages use."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.responses import HTMLResponse

# Pages show data that changes by the second, and some of it belongs to one key only.
_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
# Payloads up to 1 MiB are accepted; a page shows this much of one and offers no more.
PAYLOAD_SHOWN_BYTES = 256 * 1024


def when(moment: datetime | None) -> Markup:
    """A time in UTC; the page's script adds the browser's own zone beside it."""
    if moment is None:
        return Markup('<span class="none">—</span>')
    utc = moment.astimezone(UTC)
    iso = utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    text = utc.strftime("%Y-%m-%d %H:%M:%S")
    return Markup(f'<time datetime="{iso}">{text} UTC</time>')


def duration(seconds: float | None) -> str:
    """A span in the unit a person reads best: 42 ms, 3.1 s, 5 min 2 s, 2 h 10 min."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    return f"{int(seconds // 86400)} d {int(seconds % 86400 // 3600)} h"


def period(seconds: int) -> str:
    """A schedule's interval in its largest whole units: 90 s, 15 min, 1 h 30 min, 2 d."""
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}")
    return " ".join(parts) or "0 s"


def payload_text(payload: bytes) -> tuple[str, str, bool]:
    """The payload pretty-printed and raw, and whether either was cut to fit the page."""
    cut = len(payload) > PAYLOAD_SHOWN_BYTES
    raw = payload[:PAYLOAD_SHOWN_BYTES].decode("utf-8", "replace")
    if cut:
        return raw, raw, True
    try:
        pretty = json.dumps(json.loads(payload), indent=2, ensure_ascii=False)
    except ValueError:
        pretty = raw
    return pretty, raw, False


def _status_badge(status: str) -> Markup:
    name = escape(status)
    return Markup(f'<span class="badge status-{name.lower()}">{name}</span>')


def _number(value: float | int) -> str:
    return f"{value:,.0f}"


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("timefuse.entrypoints.ui", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=when, duration=duration, period=period, status_badge=_status_badge, number=_number
    )
    return env


class Templates:
    def __init__(self) -> None:
        self._env = environment()

    def page(
        self,
        name: str,
        context: Mapping[str, Any],
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> HTMLResponse:
        html = self._env.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status, headers={**_HEADERS, **(headers or {})})
