"""The REST API (v1): Starlette routes over :class:`~timefuse.service.events.EventService`."""

from __future__ import annotations

from timefuse.entrypoints.api.app import create_app

__all__ = ["create_app"]
