"""The production event store on PostgreSQL (psycopg 3, range-partitioned by time)."""

from __future__ import annotations

from timefuse.adapters.postgres.store import PostgresEventStore

__all__ = ["PostgresEventStore"]
