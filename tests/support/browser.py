"""A real headless Chromium for the console's tests, driven by Playwright.

The browser is Debian's ``chromium`` (``/usr/bin/chromium``, installed on demand by
``scripts/ensure-chromium.sh``; ``TIMEFUSE_CHROMIUM`` names another), not the build Playwright
would download: that download needs a network the test machines don't have. Playwright's own
Python package carries its driver, so nothing else is fetched.

Chromium is started with the flags below because the machines have no network but loopback:
without them it stalls on DNS look-ups and update checks of its own. Playwright gives every
launch a fresh, temporary profile (its own ``--user-data-dir``), so no state carries over
between tests. Screenshots go to ``test-artifacts/console/`` (ignored by git) for people to
look at after a run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

ROOT = Path(__file__).resolve().parents[2]
ENSURE_CHROMIUM = ROOT / "scripts" / "ensure-chromium.sh"
ARTIFACTS = ROOT / "test-artifacts" / "console"
CHROMIUM_ENV = "TIMEFUSE_CHROMIUM"
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",  # root (CI) can't use the sandbox; the pages are our own
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def chromium_path() -> str:
    """The Chromium binary, installed through ``scripts/ensure-chromium.sh`` when missing."""
    wanted = os.environ.get(CHROMIUM_ENV, "/usr/bin/chromium")
    if os.access(wanted, os.X_OK):
        return wanted
    found = subprocess.run(
        ["bash", str(ENSURE_CHROMIUM)], capture_output=True, text=True, check=False
    )
    path = found.stdout.strip()
    if found.returncode != 0 or not path or shutil.which(path) is None:
        raise RuntimeError(f"no Chromium for the browser tests:\n{found.stderr[-2000:]}")
    return path


@pytest.fixture(name="browser")
async def browser_fixture() -> AsyncIterator[Browser]:
    """A headless Chromium; each ``new_context()`` is a separate visitor (its own cookies)."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium_path(), args=list(CHROMIUM_ARGS), timeout=60_000
        )
        try:
            yield launched
        finally:
            await launched.close()


async def visitor(browser: Browser, *, phone: bool = False) -> BrowserContext:
    """A new visitor at desktop (1280 px) or phone width, in UTC+2 so both zones show."""
    context = await browser.new_context(
        viewport=PHONE if phone else DESKTOP,
        timezone_id="Europe/Berlin",
        locale="en-GB",
    )
    context.set_default_timeout(15_000)
    return context


async def screenshot(page: Page, name: str) -> Path:
    """Save the whole page as ``test-artifacts/console/<name>.png``; returns the path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
