"""The contract-test kit runs on timefuse plus its ``testing`` extra, nothing more."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KIT = REPO / "timefuse" / "testing"


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_testing_extra_is_pytest_and_pytest_asyncio() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {req.split(">")[0].split("=")[0] for req in project["optional-dependencies"]["testing"]}
    assert names == {"pytest", "pytest-asyncio"}


def test_the_kit_imports_nothing_beyond_timefuse_and_the_testing_extra() -> None:
    outside = {
        f"{path.name}: {root}"
        for path in KIT.glob("*.py")
        for root in imported_roots(path)
        if root not in sys.stdlib_module_names
        and root not in ("timefuse", "__future__")
        and root not in ("pytest", "pytest_asyncio")
    }
    assert not outside, f"the kit needs more than timefuse[testing]: {sorted(outside)}"


def test_the_example_plugin_tests_with_the_testing_extra() -> None:
    example = tomllib.loads((REPO / "examples/timefuse-file/pyproject.toml").read_text())
    assert example["project"]["optional-dependencies"]["test"] == ["timefuse[testing]"]
