"""Cron expressions in IANA time zones: the recurrence port on the cronsim library."""

from __future__ import annotations

from timefuse.adapters.cron.recurrence import CronRecurrence

__all__ = ["CronRecurrence"]
