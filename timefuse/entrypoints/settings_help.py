"""The settings reference of ``timefuse --help`` and the README, from the declarations.

timefuse's own sections come first, then each plugin's, in the order plugins load. The
README's table (``scripts/readme_config.py``) lists the built-in plugins only; ``--help``
lists every plugin this process would load.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from timefuse.config import CORE_SECTIONS, ConfigError, ProcessSettings, Settings, Var
from timefuse.plugins.manager import Plugins, load_plugins
from timefuse.plugins.registry import PluginError


@dataclass(frozen=True, slots=True)
class Group:
    """One section's variables, under its heading."""

    title: str
    variables: list[Var]


def setting_groups(plugins: Plugins) -> list[Group]:
    """timefuse's sections, then the sections ``plugins`` declare.

    :raises PluginError: a plugin's declaration is unusable (see ``Plugins.declarations``).
    """
    groups = [Group(section.title, section.variables()) for section in CORE_SECTIONS]
    for declared in plugins.declarations():
        title = declared.section.title or declared.plugin
        groups.append(Group(f"{title}, from {declared.origin}", declared.section.variables()))
    return groups


def builtin_groups() -> list[Group]:
    """timefuse's sections and its built-in plugins' (the README's table)."""
    return setting_groups(load_plugins(Settings.from_env({"TIMEFUSE_PLUGINS": ""})))


def loaded_groups(environ: Mapping[str, str] | None = None) -> tuple[list[Group], str | None]:
    """The groups of the plugins this process would load, and why some are missing, if so.

    Never raises: help must print whatever the configuration holds.
    """
    env = dict(os.environ if environ is None else environ)
    try:
        process = ProcessSettings.from_env(env)
    except ConfigError as exc:
        return builtin_groups(), f"external plugins not listed: {exc}"
    selected = {} if process.plugins is None else {"TIMEFUSE_PLUGINS": ",".join(process.plugins)}
    try:
        return setting_groups(load_plugins(Settings.from_env(selected))), None
    except PluginError as exc:
        return builtin_groups(), f"external plugins not listed: {exc}"


def help_text(groups: list[Group], problem: str | None = None) -> str:
    """The ``environment variables:`` part of ``--help``."""
    lines = ["environment variables:"]
    for group in groups:
        lines.append(f"\n  {group.title}:")
        for var in group.variables:
            lines.append(f"    {var.env:<38} default {var.default or '(unset)'}")
            lines.append(f"        {var.help}")
    if problem is not None:
        lines.append(f"\n  ({problem})")
    return "\n".join(lines)


def markdown_tables(groups: list[Group]) -> str:
    """One table per group, each under its heading in bold (the README's table)."""
    blocks = []
    for group in groups:
        rows = [f"**{group.title}**", "", "| Variable | Default | Meaning |", "|---|---|---|"]
        for var in group.variables:
            default = f"`{var.default}`" if var.default else "(unset)"
            rows.append(f"| `{var.env}` | {default} | {var.help} |")
        blocks.append("\n".join(rows))
    return "\n\n".join(blocks)
