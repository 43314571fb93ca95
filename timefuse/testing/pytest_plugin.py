"""The pytest plugin behind the contract-test kit (registered through the ``pytest11`` entry point).

It declares the kit's marker and has pytest rewrite the kit's assertions; the suites
themselves are imported into a project's own test files (``from
timefuse.testing.store_contract import *``, a subclass of
:class:`timefuse.testing.delivery_contract.DeliveryTypeContract`), so nothing runs in a project
that doesn't ask for it.
"""

from __future__ import annotations

import pytest

# The suites' test bodies live in these modules, not in the project's test files, so pytest
# would show a bare AssertionError without this. pytest marks an installed wheel's modules
# itself, but not those of an editable install, which is how plugin authors often work.
# It must run before the modules are imported: a plugin module is imported before any test.
pytest.register_assert_rewrite(
    "timefuse.testing.delivery_contract",
    "timefuse.testing.store_contract",
    "timefuse.testing.store_contract_actions",
    "timefuse.testing.store_contract_claims",
    "timefuse.testing.store_contract_coordination",
    "timefuse.testing.store_contract_events",
    "timefuse.testing.store_contract_listing",
    "timefuse.testing.store_contract_retention",
    "timefuse.testing.store_contract_shared",
    "timefuse.testing.store_contract_support",
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "timefuse_contract: a test from timefuse's contract-test kit"
    )
