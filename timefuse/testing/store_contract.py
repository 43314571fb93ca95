"""The event store contract: every :class:`~timefuse.ports.store.StoreAdapter` passes it.

To run it against an adapter, subclass :class:`StoreContract` in a test module and provide
the ``adapter`` fixture: an opened adapter over empty storage. If the adapter takes a clock,
build it on a :class:`~timefuse.testing.store_contract_support.ShiftedClock` and return that
clock from ``store_time`` too, so lease expiries take no real time::

    import pytest
    from timefuse.testing.store_contract import StoreContract
    from timefuse.testing.store_contract_support import ShiftedClock


    class TestMyStore(StoreContract):
        @pytest.fixture
        def store_time(self) -> ShiftedClock:
            return ShiftedClock()

        @pytest.fixture
        async def adapter(self, store_time):
            store = MyStore(clock=store_time)
            await store.open()
            yield store
            await store.close()

The tests reach the adapter through :class:`timefuse.service.store.Store`, the rule layer
every service uses (it is part of what is checked: an adapter must apply the conditions the
rules hand it). They are coroutines run by pytest-asyncio and carry its marker, so strict mode
works as well as ``asyncio_mode = "auto"``. ``docs/store-adapters.md`` explains each role.
"""

from __future__ import annotations

import pytest

from timefuse.ports.store import StoreAdapter
from timefuse.service.store import Store
from timefuse.testing.store_contract_actions import ActionsContract
from timefuse.testing.store_contract_amend import AmendContract
from timefuse.testing.store_contract_callbacks import OutcomeCallbacksContract
from timefuse.testing.store_contract_claims import ClaimsContract
from timefuse.testing.store_contract_coordination import CoordinationContract
from timefuse.testing.store_contract_events import EventsContract
from timefuse.testing.store_contract_listing import ListingContract
from timefuse.testing.store_contract_recovery import (
    DeadWorkersContract,
    RecoveryCallbacksContract,
)
from timefuse.testing.store_contract_retention import RetentionContract
from timefuse.testing.store_contract_schedules import SchedulesContract
from timefuse.testing.store_contract_support import RealTime, StoreTime
from timefuse.testing.store_contract_tenants import TenantsContract


@pytest.mark.timefuse_contract
@pytest.mark.asyncio
class StoreContract(
    EventsContract,
    ClaimsContract,
    OutcomeCallbacksContract,
    RecoveryCallbacksContract,
    DeadWorkersContract,
    CoordinationContract,
    ActionsContract,
    AmendContract,
    ListingContract,
    RetentionContract,
    TenantsContract,
    SchedulesContract,
):
    """Every case of the store contract; see the module's docstring for how to run it.

    A subclass provides the ``adapter`` fixture (pytest names it as missing otherwise).
    """

    @pytest.fixture
    def store_time(self) -> StoreTime:
        """How the tests move the store's clock; real waits unless the subclass says so."""
        return RealTime()

    @pytest.fixture
    def store(self, adapter: StoreAdapter) -> Store:
        return Store(adapter)
