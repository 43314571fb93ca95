"""The command line loads only what the command it runs needs."""

from __future__ import annotations

import subprocess
import sys


def modules_loaded_after(code: str) -> set[str]:
    script = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    return set(result.stdout.split())


def test_building_the_parser_and_printing_help_load_no_part_of_the_bench() -> None:
    loaded = modules_loaded_after(
        "from timefuse.entrypoints.cli import build_parser\n"
        "build_parser().format_help()\n"
        "build_parser()._subparsers._group_actions[0].choices['serve'].format_help()"
    )
    assert "timefuse.entrypoints.cli" in loaded
    assert not {name for name in loaded if name.startswith("timefuse.bench")}


def test_the_bench_command_loads_the_bench() -> None:
    loaded = modules_loaded_after(
        "from timefuse.entrypoints.cli import main\n"
        "try:\n    main(['bench', '--help'])\nexcept SystemExit:\n    pass"
    )
    assert "timefuse.bench.options" in loaded


def test_the_runner_of_dispatch_and_ingest_loads_neither_the_api_nor_the_console() -> None:
    loaded = modules_loaded_after("import timefuse.entrypoints.runner")
    assert "timefuse.entrypoints.api.health" in loaded  # their probes and /metrics
    assert "timefuse.entrypoints.api.app" not in loaded
    assert not {name for name in loaded if name.startswith("timefuse.entrypoints.ui")}
