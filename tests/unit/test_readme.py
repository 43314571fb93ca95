from __future__ import annotations

import argparse
from pathlib import Path

from timefuse.config import CORE_SECTIONS
from timefuse.entrypoints.cli import COMMANDS, build_parser
from timefuse.entrypoints.settings_help import builtin_groups, markdown_tables

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_the_readme_starts_with_the_two_commands() -> None:
    first_block = README.split("```", 2)[1]
    assert "make run" in first_block
    assert "make test" in first_block


def test_every_variable_is_in_the_readme_with_its_default() -> None:
    # scripts/readme_config.py rewrites the tables from the sections' declarations.
    variables = [var for group in builtin_groups() for var in group.variables]
    assert {"DB_HOST", "TIMEFUSE_CONCURRENCY", "TIMEFUSE_HTTP_ALLOWED_NETWORKS"} <= {
        var.env for var in variables
    }
    for var in variables:
        default = f"`{var.default}`" if var.default else "(unset)"
        assert f"| `{var.env}` | {default} |" in README, var.env


def test_the_readme_tables_are_generated_from_the_declarations() -> None:
    # Run `python scripts/readme_config.py` when this fails.
    assert markdown_tables(builtin_groups()) in README


def test_the_readme_groups_the_variables_by_section_core_first() -> None:
    titles = [group.title for group in builtin_groups()]
    assert titles[: len(CORE_SECTIONS)] == [section.title for section in CORE_SECTIONS]
    assert any(title.startswith("http delivery") for title in titles[len(CORE_SECTIONS) :])
    assert all(f"**{title}**" in README for title in titles)


def test_every_command_is_in_the_readme() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(COMMANDS) <= set(commands.choices)
    for name in commands.choices:
        assert f"`timefuse {name}" in README, name
