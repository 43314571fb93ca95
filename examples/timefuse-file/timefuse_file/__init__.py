"""timefuse-file: the ``file`` delivery type, an example timefuse plugin."""

from __future__ import annotations

from timefuse_file.plugin import FileDelivery, validate_destination

__all__ = ["FileDelivery", "validate_destination"]
