"""timefuse: a scheduled event orchestrator."""

from __future__ import annotations

from timefuse.plugins.hookspecs import hookimpl

__all__ = ["hookimpl"]
