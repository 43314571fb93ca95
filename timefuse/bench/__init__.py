"""``timefuse bench``: a load generator that measures a deployment against physical baselines.

An entry point layer like :mod:`timefuse.entrypoints`: it may import anything. The CLI hands
``timefuse bench ...`` to :func:`main` and imports nothing of the bench for other commands.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str]) -> int:
    """``timefuse bench`` with the arguments after ``bench``; the exit status."""
    if list(argv[:1]) == ["http-server"]:
        # HTTP servers for the API compared: a tool with commands of its own.
        from timefuse.bench.http_server import main as http_server

        return http_server(argv[1:])
    if list(argv[:1]) == ["chaos"]:
        # Faults during a steady load: a campaign with options of its own.
        from timefuse.bench.chaos import main as chaos

        return chaos(argv[1:])
    from timefuse.bench.options import build_parser
    from timefuse.bench.run import run_bench

    return run_bench(build_parser().parse_args(argv))
