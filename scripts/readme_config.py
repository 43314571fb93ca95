"""Rewrite the README's configuration table from timefuse.config (run after adding a setting)."""

from __future__ import annotations

import re
from pathlib import Path

from timefuse.config import variables

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- config:start -->", "<!-- config:end -->"


def table() -> str:
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for var in variables():
        default = f"`{var.default}`" if var.default else "(unset)"
        rows.append(f"| `{var.env}` | {default} | {var.help} |")
    return "\n".join(rows)


def main() -> None:
    text = README.read_text()
    block = f"{START}\n{table()}\n{END}"
    new = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    README.write_text(new)


if __name__ == "__main__":
    main()
