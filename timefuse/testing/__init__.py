"""The contract-test kit: one suite every implementation of a port must pass.

An adapter author provides an ``event_store`` fixture (an opened, empty store) and runs the
suite with ``from timefuse.testing.store_contract import *``; ``factories`` builds valid
domain objects for their own tests. A delivery-type author subclasses
:class:`timefuse.testing.delivery_contract.DeliveryTypeContract` in a ``Test...`` class.
"""

from __future__ import annotations

from timefuse.testing.factories import make_event

__all__ = ["make_event"]
