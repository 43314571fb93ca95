"""Which event loop timefuse's processes run on: uvloop where installed (uvicorn[standard] brings
it), for less CPU per delivery and request than the default loop."""

from __future__ import annotations

import importlib.util


def uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def install_uvloop() -> str:
    """Use uvloop for the next ``asyncio.run`` when it is installed; returns the loop's name."""
    if not uvloop_available():
        return "asyncio"
    import uvloop

    # The policy is deprecated from Python 3.12 on, where uvloop.run is the way; 3.11 has no
    # loop_factory in asyncio.run, so the policy it is.
    uvloop.install()
    return "uvloop"
