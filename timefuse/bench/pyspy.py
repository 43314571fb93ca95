"""Sampling profiles of the delivering processes with py-spy, and where their CPU goes.

``timefuse bench river --py-spy DIR`` attaches ``py-spy record`` to every dispatching process
of the first run just before the due time and stops it once every event is completed: one SVG
flame graph and one file of collapsed stacks per process. Only samples of a thread that is
running are kept (py-spy's default), so the split below is a split of CPU time.

Each sample goes to the first category, in the order of :data:`CATEGORIES`, that recognises
any frame of its stack. Cross-cutting work comes first (signing, the SSRF check, JSON,
logging, metrics), then the call site (the claim, the outcome writes, the HTTP client), so the
driver's time inside a claim counts as the claim, and a log call inside the claim as logging.
A stack of nothing but the event loop's own frames is "event loop"; the rest is "other".
"""

from __future__ import annotations

import html
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from timefuse.bench.processes import BenchError

# (category, substrings of a frame "function (path:line)"), in order of precedence.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("signing", ("webhook_signing.py", "hmac.py", "hashlib")),
    ("SSRF check", ("http_guard.py", "ipaddress.py")),
    ("JSON", ("msgspec", "json/")),
    ("logging", ("structlog", "logging/", "entrypoints/logging.py")),
    ("metrics", ("prometheus_client", "service/metrics.py", "Dispatcher._observe (")),
    ("claim", ("claim_due (", "Dispatcher._claim (")),
    ("outcome writes", ("service/writeback.py", "record_outcomes (")),
    (
        "HTTP client",
        (
            "aiohttp/",
            "yarl/",
            "multidict/",
            "httptools",
            "plugins/http.py",
            "plugins/http_transport.py",
            "plugins/http_connection.py",
        ),
    ),
    ("API", ("starlette/", "uvicorn/", "entrypoints/api", "service/events.py")),
    ("store, other", ("adapters/postgres/", "psycopg")),
    ("dispatcher", ("service/dispatcher.py", "service/destinations.py", "plugins/manager.py")),
    ("other timefuse", ("timefuse/service/", "timefuse/adapters/", "timefuse/plugins/")),
)
# A stack made of these frames alone is the event loop running itself (uvloop's C code shows
# as its Python caller).
LOOP_FRAMES = (
    "asyncio/",
    "uvloop",
    "selectors.py",
    "<frozen runpy>",
    "timefuse/__main__.py",
    "entrypoints/cli.py",
    "entrypoints/runner.py",
    "entrypoints/loops.py",
)
ORDER = (*(name for name, _ in CATEGORIES), "event loop", "other")
Split = dict[str, float]


def find_pyspy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


class Recorder:
    """Two ``py-spy record`` processes on one pid: a flame graph and the raw stacks."""

    def __init__(self, pyspy: str, pid: int, base: Path, title: str, rate: int = 200) -> None:
        self.title = title
        self.svg = base.with_suffix(".svg")
        self.stacks = base.with_suffix(".txt")
        common = [pyspy, "record", "--pid", str(pid), "--rate", str(rate)]
        self._args = [
            [*common, "--format", "flamegraph", "--output", str(self.svg)],
            [*common, "--format", "raw", "--output", str(self.stacks)],
        ]
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        self.svg.parent.mkdir(parents=True, exist_ok=True)
        for args in self._args:
            self._procs.append(
                subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            )

    def stop(self) -> None:
        """SIGINT makes py-spy write its output; wait for it."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self._procs:
            try:
                _, err = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise BenchError("py-spy did not write its profile within 120 s") from None
            if not self.stacks.exists() and proc.returncode not in (0, -signal.SIGINT):
                raise BenchError(f"py-spy failed: {err.decode(errors='replace')[-1000:]}")
        self._procs.clear()
        self._retitle()

    def _retitle(self) -> None:
        # py-spy titles the graph with its own command line (local paths, a pid): say what
        # was profiled instead.
        try:
            text = self.svg.read_text()
        except OSError:
            return
        self.svg.write_text(text.replace(" ".join(self._args[0]), html.escape(self.title), 1))


def categorise(frames: list[str]) -> str:
    stack = ";".join(frames)
    for name, needles in CATEGORIES:
        if any(needle in stack for needle in needles):
            return name
    if frames and all(any(f in frame for f in LOOP_FRAMES) for frame in frames):
        return "event loop"
    return "other"


def split(lines: Iterable[str]) -> Counter[str]:
    """Samples per category from py-spy's raw output (``frame;frame;... count`` lines)."""
    counts: Counter[str] = Counter()
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if count.isdigit():
            counts[categorise(stack.split(";") if stack else [])] += int(count)
    return counts


def split_files(paths: Iterable[Path]) -> Counter[str]:
    total: Counter[str] = Counter()
    for path in paths:
        with path.open(errors="replace") as lines:
            total.update(split(lines))
    return total


def cpu_split(recorders: Iterable[Recorder], deliveries: int, cpu_s: float) -> dict[str, Split]:
    """Each part's share of the samples, and of the measured CPU per delivery."""
    counts = split_files(r.stacks for r in recorders if r.stacks.exists())
    total = sum(counts.values())
    if not total or not deliveries:
        return {}
    us_per_delivery = cpu_s * 1e6 / deliveries
    return {
        part: {
            "share": counts[part] / total,
            "us_per_delivery": counts[part] / total * us_per_delivery,
            "samples": counts[part],
        }
        for part in ORDER
        if counts[part]
    }
