"""Every self-contained bench scenario names a run function that exists and takes its options."""

from __future__ import annotations

import importlib
import inspect

import pytest

from timefuse.bench.options import SCENARIOS
from timefuse.bench.run import _SELF_CONTAINED


@pytest.mark.parametrize("scenario", sorted(_SELF_CONTAINED))
def test_the_scenarios_run_function_resolves(scenario: str) -> None:
    assert scenario in SCENARIOS
    module, _, function = _SELF_CONTAINED[scenario].partition(":")
    run = getattr(importlib.import_module(module), function)
    assert callable(run)
    assert list(inspect.signature(run).parameters) == ["options"]
