"""A one-line progress bar on stderr, drawn only on a terminal (no dependency)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

_WIDTH = 30
_REDRAW_SECONDS = 0.1


class Progress:
    """``update(done)`` redraws ``label [#####.....] done/total rate``; ``close()`` clears it.

    Off a terminal it draws nothing, so logs and ``--json`` output stay clean.
    """

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self._label = label
        self._total = max(total, 1)
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = self._stream.isatty()
        self._started = time.monotonic()
        self._last_draw = 0.0

    def update(self, done: int, *, force: bool = False, detail: str = "") -> None:
        if not self._enabled:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < _REDRAW_SECONDS:
            return
        self._last_draw = now
        fraction = min(done / self._total, 1.0)
        filled = int(fraction * _WIDTH)
        elapsed = max(now - self._started, 1e-9)
        bar = "#" * filled + "." * (_WIDTH - filled)
        line = f"{self._label} [{bar}] {done:,}/{self._total:,} {done / elapsed:,.0f}/s"
        if detail:
            line += f" {detail}"
        self._stream.write(f"\r{line}\x1b[K")
        self._stream.flush()

    def close(self) -> None:
        if self._enabled:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
