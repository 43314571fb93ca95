"""The pytest plugin behind the contract-test kit (registered through the ``pytest11`` entry point).

It declares the kit's marker and has pytest rewrite the kit's assertions. It defines no
fixture: the suites are classes a project subclasses in its own test files
(:class:`timefuse.testing.store_contract.StoreContract`,
:class:`timefuse.testing.delivery_contract.DeliveryTypeContract`), with every fixture on the
class, so nothing runs in a project that doesn't ask for it.
"""

from __future__ import annotations

import pkgutil

import pytest

import timefuse.testing

# The suites' test bodies live in these modules, not in the project's test files, so pytest
# would show a bare AssertionError without this. pytest marks an installed wheel's modules
# itself, but not those of an editable install, which is how plugin authors often work.
# It must run before the modules are imported: a plugin module is imported before any test.
KIT_MODULES = tuple(
    f"{__package__}.{module.name}"
    for module in pkgutil.iter_modules(timefuse.testing.__path__)
    if module.name.startswith(("delivery_contract", "store_contract"))
)
pytest.register_assert_rewrite(*KIT_MODULES)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "timefuse_contract: a test from timefuse's contract-test kit"
    )
