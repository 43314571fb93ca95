"""The operator console, served at /ui by the API's process: server-rendered pages, no CDN."""

from __future__ import annotations

from timefuse.entrypoints.ui.console import PREFIX, Console, ConsoleMount

__all__ = ["PREFIX", "Console", "ConsoleMount"]
