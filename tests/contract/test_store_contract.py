"""The event store contract suite, run against every adapter in ``conftest.STORE_FACTORIES``."""

from __future__ import annotations

from timefuse.testing.store_contract import *  # noqa: F403
