"""Plant known bugs one at a time and see which test tier catches each.

Each bug below is a small, realistic change to `timefuse/domain` or `timefuse/service` that
once went unnoticed: an exponent off by one, a flag left set, a queue jumped, a failure
reported as success. For each, the last commit (``git archive HEAD``: uncommitted edits are
not part of the verdict) is unpacked in a temporary directory, the bug is planted there (never
in the checkout), and the tiers run against the copy, stopping at the first failing test:

* ``service``: ``tests/service`` alone (the dispatcher, gate, writer, maintenance on the
  in-memory store with a fast-forwarded clock);
* ``fast``: the fast tiers together (unit, the contract on the in-memory store, service), the
  set `make mutants` runs. A bug the service tier caught is caught here too, so only the unit
  and contract tests are run for a bug the service tier missed.

A bug is caught by a tier when a test of that tier fails with it planted; the first failing
test is printed. Each tier is first run on the unplanted copy: a tier that fails without any
bug would make every verdict meaningless, so the script stops there.

Run from the repository root: ``.venv/bin/python scripts/planted_bugs.py [NAME ...]``
(``--list`` shows the bugs). Exit status 0 when the fast tiers catch every bug.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Bug:
    name: str
    path: str
    old: str
    new: str
    what: str


BUGS = [
    Bug(
        "backoff-exponent",
        "timefuse/domain/retry.py",
        "exponent = max(0, failed_attempts - 1)",
        "exponent = max(0, failed_attempts)",
        "the n-th retry waits up to base * 2**n, not base * 2**(n-1)",
    ),
    Bug(
        "breaker-reset-probing",
        "timefuse/domain/breaker.py",
        "        self.failures = 0\n        self.probing = False\n",
        "        self.failures = 0\n",
        "reset() leaves a probe marked as out: the breaker never probes again",
    ),
    Bug(
        "abandoned-probe",
        "timefuse/service/gate.py",
        "            dest.probe_id = None\n            dest.breaker.probing = False\n",
        "            dest.probe_id = None\n",
        "a probe that never ran keeps the half-open breaker waiting for it forever",
    ),
    Bug(
        "token-wait-partial",
        "timefuse/domain/ratelimit.py",
        "(1.0 - self.tokens) / self.rate",
        "1.0 / self.rate",
        "the wait for a token ignores the part of a token already there",
    ),
    Bug(
        "hold-whole-lease",
        "timefuse/service/dispatcher.py",
        "hold_seconds=min(gate.hold_seconds, settings.lease_seconds / 4),",
        "hold_seconds=gate.hold_seconds,",
        "the hold is not bounded by the lease: an event may start with most of its lease spent",
    ),
    Bug(
        "queued-not-counted",
        "timefuse/service/dispatcher.py",
        "room = settings.concurrency - self._gate.occupied",
        "room = settings.concurrency - self.in_flight",
        "events waiting in the gate are not counted against the concurrency",
    ),
    Bug(
        "queued-not-released",
        "timefuse/service/dispatcher.py",
        "        for claimed in self._gate.drain():\n"
        "            self._writer.hand_back(claimed.ref, 0.0)\n",
        "        self._gate.drain()\n",
        "events waiting in the gate at shutdown are not handed back (they wait out their lease)",
    ),
    Bug(
        "own-backoff-ignored",
        "timefuse/service/dispatcher.py",
        "        if event.retry_backoff_seconds is None"
        " and event.retry_backoff_max_seconds is None:\n",
        "        if True:\n",
        "an event's own backoff base and cap are ignored",
    ),
    Bug(
        "queue-jumping",
        "timefuse/service/gate.py",
        "if not dest.waiting and self._can_start(dest, now):",
        "if self._can_start(dest, now):",
        "a newly claimed event starts ahead of those waiting for the same destination",
    ),
    Bug(
        "hand-backs-dropped",
        "timefuse/service/writeback.py",
        "            except BaseException:\n                self._hand_backs[delay].extend(refs)\n",
        "            except BaseException:\n",
        "hand-backs that failed to be written are dropped instead of kept for the next flush",
    ),
    Bug(
        "failed-write-reported-written",
        "timefuse/service/writeback.py",
        "            self._outage(exc)\n            return False\n",
        "            self._outage(exc)\n            return True\n",
        "a flush the store refused reports success: shutdown stops retrying and loses outcomes",
    ),
]

TIERS = {
    "service": ["tests/service"],
    "unit and contract": [
        "tests/unit",
        "tests/contract",
        "-m",
        "not postgres and not kafka",
        "-k",
        "not TestSqliteStore and not ten_thousand and not dead_receivers_backlog",
    ],
}


def copy_tree(dest: Path) -> None:
    """The last commit's files, unpacked in ``dest``."""
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", "HEAD"], cwd=ROOT, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)


def plant(tree: Path, bug: Bug) -> None:
    path = tree / bug.path
    text = path.read_text()
    if text.count(bug.old) != 1:
        raise SystemExit(f"{bug.name}: the code to change is not in {bug.path} exactly once")
    planted = text.replace(bug.old, bug.new)
    compile(planted, str(path), "exec")  # a bug that doesn't compile would be "caught" by any test
    path.write_text(planted)


def run_tier(tree: Path, tier: str) -> tuple[bool, str, float]:
    """Run a tier against the copy; (passed, first failing test or "", seconds)."""
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
    # The profile `make mutants` uses: the same hypothesis examples every run and no deadline
    # per example, so a verdict doesn't depend on luck or on how busy the machine is.
    command += ["-o", "timeout=120", "--hypothesis-profile=mutants", *TIERS[tier]]
    started = time.monotonic()
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if done.returncode == 0:
        return True, "", seconds
    failed = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    if failed:
        return False, failed[0], seconds
    # No test failed by name (a collection error, a crash): the output's last lines say why.
    lines = (done.stdout + done.stderr).strip().splitlines()
    return False, " | ".join(lines[-3:]) or f"exit status {done.returncode}", seconds


def main(argv: list[str]) -> int:
    if "--list" in argv:
        for bug in BUGS:
            print(f"{bug.name:<30} {bug.path:<32} {bug.what}")
        return 0
    chosen = [bug for bug in BUGS if not argv or bug.name in argv]
    with tempfile.TemporaryDirectory(prefix="timefuse-planted-") as tmp:
        clean = Path(tmp) / "clean"
        copy_tree(clean)
        checked: set[str] = set()

        def tier_passes_without_bugs(tier: str) -> bool:
            """Run once per tier, when the tier is first needed."""
            if tier not in checked:
                passed, failure, seconds = run_tier(clean, tier)
                verdict = "passes" if passed else f"FAILS: {failure}"
                print(f"  (no bug planted: the {tier} tier {verdict}, {seconds:.0f} s)")
                if not passed:
                    return False
                checked.add(tier)
            return True

        caught = {"service": 0, "fast": 0}
        for bug in chosen:
            tree = Path(tmp) / bug.name
            copy_tree(tree)
            plant(tree, bug)
            print(f"\n{bug.name} ({bug.path}): {bug.what}")
            for tier in TIERS:
                if not tier_passes_without_bugs(tier):
                    return 2
                passed, failure, seconds = run_tier(tree, tier)
                verdict = "missed" if passed else f"caught by {failure}"
                print(f"  {tier:<17} {verdict} ({seconds:.0f} s)")
                if not passed:
                    caught["service" if tier == "service" else "fast"] += 1
                    break
            shutil.rmtree(tree)
    caught["fast"] += caught["service"]
    print()
    print(f"service tier: {caught['service']} of {len(chosen)} planted bugs caught")
    print(f"fast tiers (unit, contract, service): {caught['fast']} of {len(chosen)} caught")
    return 0 if caught["fast"] == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
