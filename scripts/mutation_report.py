"""Summarise the last `make mutants` run: the score per module and every mutant not killed.

mutmut keeps each mutant's result in ``mutants/<file>.meta`` (the exit code of the tests run
against it). A mutant counts as killed when the tests failed (or ran past their time limit,
which an infinite loop planted in a wait does); everything else is a survivor and is listed:
"survived" (the tests passed), "no tests" (no fast test reaches the code), or another status.

Run from the repository root: ``python scripts/mutation_report.py [--all]``; ``--all`` lists
the survivors of every module, not only a count per module. ``--names STATUS [MODULE ...]``
prints only the names of the mutants with that status ("survived", "not checked", "timeout",
...), of the modules given (paths such as ``timefuse/service/gate.py``) or all, for
``mutmut run NAME ...``: mutmut keeps a verdict until the mutated function changes, so after
new tests are added the survivors are checked again by name. ``--sample N`` after it draws N of
those names at random (the same N for the same set), to estimate the score of mutants not
checked yet when a full run takes too long.
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter, defaultdict
from pathlib import Path

# mutmut's own reading of a worker's exit code (mutmut.stats.status_by_exit_code).
KILLED = {1: "killed", 3: "killed", 36: "timeout", 255: "timeout"}
KILLED |= {-24: "timeout", 24: "timeout", 152: "timeout"}  # SIGXCPU: out of CPU time
NAMED = {0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", None: "not checked"}


def status(exit_code: int | None) -> str:
    return KILLED.get(exit_code, NAMED.get(exit_code, f"exit {exit_code}"))  # type: ignore[arg-type]


def main(argv: list[str]) -> int:
    root = Path("mutants")
    metas = sorted(root.glob("timefuse/**/*.py.meta"))
    if not metas:
        print("no results in ./mutants: run `make mutants` first", file=sys.stderr)
        return 2
    if argv[:1] == ["--names"] and len(argv) >= 2:
        sample = None
        if "--sample" in argv:
            at = argv.index("--sample")
            sample = int(argv[at + 1])
            del argv[at : at + 2]
        wanted, modules = argv[1], set(argv[2:])
        names = []
        for meta in metas:
            module = str(meta.relative_to(root)).removesuffix(".meta")
            if modules and module not in modules:
                continue
            codes = json.loads(meta.read_text())["exit_code_by_key"]
            names += [name for name, code in codes.items() if status(code) == wanted]
        if sample is not None and sample < len(names):
            # The same draw every time for the same set of names: a run can be repeated.
            names = random.Random(0).sample(sorted(names), sample)
        print("\n".join(names))
        return 0
    by_module: dict[str, Counter[str]] = defaultdict(Counter)
    survivors: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for meta in metas:
        module = str(meta.relative_to(root)).removesuffix(".meta")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        for name, code in codes.items():
            outcome = status(code)
            by_module[module][outcome] += 1
            if outcome not in ("killed", "timeout"):
                survivors[module].append((name, outcome))
    total = Counter[str]()
    print(f"{'module':<40} {'mutants':>8} {'checked':>8} {'killed':>8} {'score':>7}")
    for module, counts in sorted(by_module.items()):
        total.update(counts)
        print(_row(module, counts))
    print(_row("all", total))
    print(f"of the killed, cut off at the time limit: {total['timeout']}")
    print("not killed:", dict(sorted((k, v) for k, v in total.items() if k not in KILLED.values())))
    if "--all" in argv or sum(len(v) for v in survivors.values()) <= 200:
        for module, names in sorted(survivors.items()):
            print(f"\n{module}")
            for name, outcome in names:
                # mutmut's names mark a method as module.xǁClassǁmethod__mutmut_N.
                print(f"  {outcome:<12} {name}")
    print("\nA mutant's diff: .venv/bin/mutmut show <name>")
    return 0


def _row(name: str, counts: Counter[str]) -> str:
    """Mutants, how many have a verdict, how many were killed, and the score of those."""
    n = sum(counts.values())
    checked = n - counts["not checked"]
    killed = counts["killed"] + counts["timeout"]
    score = f"{killed / checked:.1%}" if checked else "-"
    return f"{name:<40} {n:>8} {checked:>8} {killed:>8} {score:>7}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
