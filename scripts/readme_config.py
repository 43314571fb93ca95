"""Rewrite the README's configuration tables from the settings' declarations.

Run after adding or changing a setting: timefuse's own sections and its built-in plugins'
(``timefuse --help`` lists installed plugins' settings too).
"""

from __future__ import annotations

import re
from pathlib import Path

from timefuse.entrypoints.settings_help import builtin_groups, markdown_tables

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- config:start -->", "<!-- config:end -->"


def block() -> str:
    return f"{START}\n{markdown_tables(builtin_groups())}\n{END}"


def main() -> None:
    text = README.read_text()
    new = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block(), text, flags=re.S)
    README.write_text(new)


if __name__ == "__main__":
    main()
