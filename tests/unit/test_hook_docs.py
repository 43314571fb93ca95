"""Every hook is documented, in its spec and in docs/plugins.md, and tested (after datasette).

Also runs the plugin that opens ``timefuse/plugins/hookspecs.py`` through the delivery type
contract, so the first code a plugin author copies keeps working.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
import types
from collections.abc import Callable
from pathlib import Path

import pytest

from timefuse.domain import DeliveryOutcome, Event, OutcomeKind
from timefuse.plugins import hookspecs
from timefuse.ports.delivery import DeliveryType
from timefuse.testing.delivery_contract import (
    DeliveryTypeContract,
    ReadBack,
    collect_delivery_types,
)

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "plugins.md"
THIS_FILE = Path(__file__).resolve()


def hook_specs() -> dict[str, Callable[..., object]]:
    marker = f"{hookspecs.PROJECT}_spec"  # the attribute pluggy's HookspecMarker sets
    return {
        name: value
        for name, value in vars(hookspecs).items()
        if inspect.isfunction(value) and hasattr(value, marker)
    }


HOOKS = sorted(hook_specs())


def rendered_signature(function: Callable[..., object]) -> str:
    """``def name(arg: Type, ...) -> Return``, with annotations as written in the source."""
    signature = inspect.signature(function)
    params = ", ".join(f"{p.name}: {p.annotation}" for p in signature.parameters.values())
    return f"def {function.__name__}({params}) -> {signature.return_annotation}"


def test_finds_the_hooks() -> None:
    assert HOOKS == ["declare_settings", "delivery_attempted", "register_delivery_types"]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_spec_has_a_docstring(hook: str) -> None:
    doc = inspect.getdoc(hook_specs()[hook]) or ""
    assert len(doc) > 40, f"hookspec {hook} needs a docstring: when it is called, its arguments"
    for param in inspect.signature(hook_specs()[hook]).parameters:
        assert f":param {param}:" in doc, f"hookspec {hook} doesn't document {param}"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_in_the_guide_with_its_full_signature(hook: str) -> None:
    guide = GUIDE.read_text(encoding="utf-8")
    signature = rendered_signature(hook_specs()[hook])
    assert f"### {hook}" in guide, f"docs/plugins.md has no section for {hook}"
    assert signature in guide, f"docs/plugins.md doesn't show `{signature}`"


def implementing_tests(hook: str) -> list[str]:
    """Node ids of the tests that implement ``hook`` themselves or use a module-level plugin
    (class or function) that does: the only tests that could test it."""
    found = []
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        if path.resolve() == THIS_FILE:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        holders = {
            node.name
            for node in tree.body
            if isinstance(node, ast.ClassDef | ast.FunctionDef) and _defines(node, hook)
        }
        for name, test in _tests(tree):
            uses = {n.id for n in ast.walk(test) if isinstance(n, ast.Name)}
            if _defines(test, hook) or uses & holders:
                found.append(f"{path.relative_to(REPO)}::{name}")
    return found


def _defines(node: ast.AST, hook: str) -> bool:
    return any(
        isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == hook
        for n in ast.walk(node)
        if n is not node
    )


def _tests(tree: ast.Module) -> list[tuple[str, ast.AST]]:
    found: list[tuple[str, ast.AST]] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
            "test_"
        ):
            found.append((node.name, node))
        if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            found.extend(
                (f"{node.name}::{method.name}", method)
                for method in node.body
                if isinstance(method, ast.FunctionDef | ast.AsyncFunctionDef)
                and method.name.startswith("test_")
            )
    return found


def test_every_hook_is_called_by_a_passing_test_on_an_implementation_it_wrote(
    tmp_path: Path,
) -> None:
    """A hook counts as tested only when a test's own implementation of it was called by
    timefuse (not by the test) and the test passed: run those tests with a profiler, the
    unit tests first (the run stops once every hook was called)."""
    candidates = sorted(
        {test for hook in HOOKS for test in implementing_tests(hook)},
        key=lambda node: (not node.startswith("tests/unit/"), node),
    )
    assert candidates, "no test implements any hook"
    calls = tmp_path / "calls.jsonl"
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-p", "tests.support.hook_calls"),
            *("-p", "no:schemathesis", "-p", "no:hypothesispytest"),  # slow to load, unused
            *candidates,
        ],
        cwd=REPO,
        env={**os.environ, "TIMEFUSE_HOOK_CALLS": str(calls), "TIMEFUSE_HOOKS": ",".join(HOOKS)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    lines = calls.read_text().splitlines() if calls.exists() else []
    tested = {json.loads(line)["hook"] for line in lines}
    assert tested == set(HOOKS), (
        f"hooks no passing test calls on its own implementation: {set(HOOKS) - tested}\n"
        f"{result.stdout[-3000:]}"
    )


# -- the plugin in the hookspecs docstring -----------------------------------------------------


def literal_blocks(doc: str) -> list[str]:
    """The reST literal blocks (the indented text after a line ending in ``::``)."""
    blocks = re.findall(r"::\n\n((?:(?:[ ]{4}.*)?\n)+)", doc + "\n")
    return [textwrap.dedent(block).strip() + "\n" for block in blocks]


def documented_plugin() -> types.ModuleType:
    module = types.ModuleType("my_package.plugin")
    code = literal_blocks(hookspecs.__doc__ or "")[0]
    exec(compile(code, "timefuse/plugins/hookspecs.py (docstring)", "exec"), module.__dict__)
    return module


def test_the_documented_entry_point_is_valid_toml_naming_the_module() -> None:
    table = tomllib.loads(literal_blocks(hookspecs.__doc__ or "")[1])
    assert table["project"]["entry-points"]["timefuse"] == {"echo": "my_package.plugin"}


def test_the_documented_settings_section_declares_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = documented_plugin()
    monkeypatch.setitem(sys.modules, module.__name__, module)  # dataclasses look it up
    exec(literal_blocks(hookspecs.__doc__ or "")[2], module.__dict__)
    section = module.declare_settings()
    assert [var.env for var in section.variables()] == ["TIMEFUSE_ECHO_PREFIX"]
    assert section.from_env({"TIMEFUSE_ECHO_PREFIX": ">"}).prefix == ">"


def test_the_guide_opens_with_the_same_plugin_as_the_hookspecs_module() -> None:
    code = literal_blocks(hookspecs.__doc__ or "")[0]
    assert f"```python\n{code}```" in GUIDE.read_text(encoding="utf-8")


class TestTheDocumentedPlugin(DeliveryTypeContract):
    """The docstring's ``echo`` type passes the contract every delivery type should."""

    @pytest.fixture
    def delivery_type(self) -> DeliveryType:
        return collect_delivery_types(documented_plugin())["echo"]

    @pytest.fixture
    def valid_destination(self) -> str:
        return "echo:orders"

    @pytest.fixture
    def invalid_destinations(self) -> list[str]:
        return ["", "orders", "http://receiver.example/"]

    @pytest.fixture
    def arrange_failure(self) -> str:
        return "orders"  # echo's only failure: a destination it refuses

    @pytest.fixture
    def delivered_event_ids(self, capsys: pytest.CaptureFixture[str]) -> ReadBack:
        async def read() -> list[str]:  # echo prints "<event id> <attempt> <payload>"
            out = capsys.readouterr().out
            return [line.split()[0] for line in out.splitlines() if line.strip()]

        return read


# -- the reference tables a plugin author reads ------------------------------------------------


def guide_table(marker: str) -> list[str]:
    guide = GUIDE.read_text(encoding="utf-8")
    table = guide.split(f"<!-- {marker}:start -->")[1].split(f"<!-- {marker}:end -->")[0]
    return re.findall(r"^\| `(\w+)` \|", table, flags=re.M)


def test_the_guide_describes_every_field_of_the_event_a_delivery_sees() -> None:
    assert guide_table("event-fields") == [f.name for f in dataclasses.fields(Event)]


def test_the_guide_describes_every_field_of_the_outcome() -> None:
    guide = GUIDE.read_text(encoding="utf-8")
    for f in dataclasses.fields(DeliveryOutcome):
        assert f"| `{f.name}` |" in guide, f.name
    for kind in OutcomeKind:
        assert f"`{kind.value}`" in guide, kind
