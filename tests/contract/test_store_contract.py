"""The event store contract suites, run against every adapter in ``conftest.STORE_FACTORIES``.

The base suite, and the suite of the operations added since (listings, redelivery,
rescheduling, lease expiry records), which every adapter listed there implements.
"""

from __future__ import annotations

from timefuse.testing.store_contract import *  # noqa: F403
from timefuse.testing.store_contract_ops import *  # noqa: F403
