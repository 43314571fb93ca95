"""Every self-contained bench scenario names a run function that exists and takes its options."""

from __future__ import annotations

import importlib
import inspect
import signal

import pytest

from timefuse.bench import stop_on_terminate
from timefuse.bench.options import SCENARIOS
from timefuse.bench.run import _SELF_CONTAINED


@pytest.mark.parametrize("scenario", sorted(_SELF_CONTAINED))
def test_the_scenarios_run_function_resolves(scenario: str) -> None:
    assert scenario in SCENARIOS
    module, _, function = _SELF_CONTAINED[scenario].partition(":")
    run = getattr(importlib.import_module(module), function)
    assert callable(run)
    assert list(inspect.signature(run).parameters) == ["options"]


@pytest.mark.parametrize("ignored", [False, True])
def test_sigterm_and_an_ignored_sigint_stop_a_bench_run_as_ctrl_c_does(ignored: bool) -> None:
    # Otherwise a run stopped with kill, or Ctrl-C'd as a background job, leaves its
    # PostgreSQL, Kafka broker and timefuse processes running.
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_on_terminate()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(sig)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
