"""The contract-test kit: one suite every implementation of a port must pass.

Both suites are classes to subclass in a ``Test...`` class of the author's own tests, giving
the fixtures they name: a store adapter's author subclasses
:class:`timefuse.testing.store_contract.StoreContract` (an ``adapter`` fixture: an opened
adapter over empty storage; see ``docs/store-adapters.md``), a delivery type's author
:class:`timefuse.testing.delivery_contract.DeliveryTypeContract` (see ``docs/plugins.md``).
``factories`` builds valid domain objects for their own tests. The kit needs timefuse's
``testing`` extra (pytest, pytest-asyncio).
"""

from __future__ import annotations

from timefuse.testing.factories import make_event

__all__ = ["make_event"]
