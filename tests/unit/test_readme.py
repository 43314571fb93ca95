from __future__ import annotations

import argparse
from pathlib import Path

from timefuse.config import variables
from timefuse.entrypoints.cli import COMMANDS, build_parser

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_the_readme_starts_with_the_two_commands() -> None:
    first_block = README.split("```", 2)[1]
    assert "make run" in first_block
    assert "make test" in first_block


def test_every_variable_is_in_the_readme_with_its_default() -> None:
    # scripts/readme_config.py rewrites the table from timefuse.config.
    for var in variables():
        default = f"`{var.default}`" if var.default else "(unset)"
        assert f"| `{var.env}` | {default} |" in README, var.env


def test_every_command_is_in_the_readme() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(COMMANDS) <= set(commands.choices)
    for name in commands.choices:
        assert f"`timefuse {name}" in README, name
