"""``timefuse bench``: a load generator that measures a deployment against physical baselines.

An entry point layer like :mod:`timefuse.entrypoints`: it may import anything. The CLI hands
``timefuse bench ...`` to :func:`main` and imports nothing of the bench for other commands.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence


def stop_on_terminate() -> None:
    """SIGTERM stops a run as Ctrl-C does, and so does SIGINT where it was ignored (a job run
    in the background): the servers and processes the run started are stopped and removed on
    the way out, not left running."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, interrupt)


def main(argv: Sequence[str]) -> int:
    """``timefuse bench`` with the arguments after ``bench``; the exit status."""
    stop_on_terminate()
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
