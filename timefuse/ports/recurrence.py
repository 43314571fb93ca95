"""The recurrence port: when a cron expression next fires, in a time zone.

Schedule rules in :mod:`timefuse.domain.schedule` take the two methods as plain callables
(``recurrence.check`` and ``recurrence.next_after``), so the domain never imports this module.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class Recurrence(Protocol):
    """Cron arithmetic in IANA time zones, with timefuse's DST rules.

    A local time that does not exist (the clocks skip it) fires at the first valid instant
    after it; a local time that exists twice (the clocks repeat it) fires once, at its first
    occurrence. Instants returned for one expression and zone never repeat and only increase.
    """

    def check(self, expression: str) -> str | None:
        """``None`` when ``expression`` is a cron expression this adapter accepts, otherwise
        the reason, worded for the person who wrote it."""
        ...

    def next_after(self, expression: str, zone: str, after: datetime) -> datetime | None:
        """The first instant strictly after ``after`` at which ``expression`` fires in ``zone``
        (an IANA name), in UTC; ``None`` if it never fires again within the adapter's horizon.

        ``expression`` has passed :meth:`check` and ``zone`` is a known zone; ``after`` is
        timezone-aware.
        """
        ...
