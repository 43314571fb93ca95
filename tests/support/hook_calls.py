"""A pytest plugin that records which hooks timefuse called on implementations a test wrote.

Loaded with ``-p tests.support.hook_calls`` by ``tests/unit/test_hook_docs.py``, in a pytest of
its own over the tests that define a hook implementation. While each test runs, a profiler
notes every call of a function named after a hook, written in ``tests/``, made by code outside
``tests/`` (timefuse, or pluggy on its behalf): the hook was called, not the test's own
function by the test. Each hook called so by a test that passed is written, one JSON line per
(test, hook), to the file named by ``TIMEFUSE_HOOK_CALLS``; the run stops once every hook named
in ``TIMEFUSE_HOOKS`` has been seen.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Generator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

TESTS = str(Path(__file__).resolve().parents[1]) + os.sep
HOOKS = frozenset(filter(None, os.environ.get("TIMEFUSE_HOOKS", "").split(",")))
_called: set[str] = set()
_seen: set[str] = set()


def _profile(frame: FrameType, event: str, arg: Any) -> None:
    if event != "call":
        return
    code = frame.f_code
    if code.co_name not in HOOKS or not code.co_filename.startswith(TESTS):
        return
    caller = frame.f_back
    if caller is not None and not caller.f_code.co_filename.startswith(TESTS):
        _called.add(code.co_name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    _called.clear()
    sys.setprofile(_profile)
    try:
        return (yield)
    finally:
        sys.setprofile(None)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call" or not report.passed or not _called:
        return
    with open(os.environ["TIMEFUSE_HOOK_CALLS"], "a", encoding="utf-8") as out:
        for hook in sorted(_called):
            out.write(json.dumps({"test": report.nodeid, "hook": hook}) + "\n")
    _seen.update(_called)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    if _seen >= HOOKS:
        item.session.shouldstop = "every hook was called by a passing test"
