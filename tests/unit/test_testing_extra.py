"""The contract-test kit runs on timefuse plus its ``testing`` extra, nothing more."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KIT = REPO / "timefuse" / "testing"
KIT_MODULES_DIR = KIT


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


def test_every_module_of_the_kit_has_its_assertions_rewritten() -> None:
    from timefuse.testing.pytest_plugin import KIT_MODULES

    expected = {
        f"timefuse.testing.{path.stem}"
        for path in KIT_MODULES_DIR.glob("*.py")
        if path.stem.startswith(("delivery_contract", "store_contract"))
    }
    assert set(KIT_MODULES) == expected
    assert "timefuse.testing.store_contract_claims" in expected


def test_the_kit_defines_no_module_level_fixture() -> None:
    # Every fixture of the suites is on their classes, overridable by name (docs/plugins.md).
    for path in KIT_MODULES_DIR.glob("*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                decorators = [ast.unparse(d) for d in node.decorator_list]
                assert not any("fixture" in d for d in decorators), (path.name, node.name)
