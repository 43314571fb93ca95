"""``timefuse bench``: a load generator that measures a deployment against physical baselines.

An entry point layer like :mod:`timefuse.entrypoints`: it may import anything. The CLI imports
:mod:`timefuse.bench.options` to build its parser and :func:`run_bench` only when the command
runs, so ``timefuse serve`` never loads the bench.
"""

from __future__ import annotations

import argparse


def run_bench(args: argparse.Namespace) -> int:
    from timefuse.bench.run import run_bench as run

    return run(args)
