"""Configuration: settings declared per section, each variable with its default and meaning.

:class:`Settings` holds timefuse's own sections (:mod:`timefuse.config.sections`), one per
component; a plugin declares a section of its own the same way (:class:`Section`,
:func:`setting`) and receives only that. ``timefuse --help`` and the README's table are
generated from the declarations.
"""

from __future__ import annotations

from timefuse.config.declare import ConfigError, Section, Var, read_section, setting, text
from timefuse.config.parsers import (
    KafkaProperties,
    boolean,
    choice,
    comma_list,
    integer,
    number,
    optional,
)
from timefuse.config.sections import (
    ApiSettings,
    DispatchSettings,
    IngestSettings,
    KafkaSettings,
    LogSettings,
    MaintenanceSettings,
    ProcessSettings,
    ServerSettings,
    StoreSettings,
)
from timefuse.config.settings import CORE_SECTIONS, Settings, core_variables

__all__ = [
    "CORE_SECTIONS",
    "ApiSettings",
    "ConfigError",
    "DispatchSettings",
    "IngestSettings",
    "KafkaProperties",
    "KafkaSettings",
    "LogSettings",
    "MaintenanceSettings",
    "ProcessSettings",
    "Section",
    "ServerSettings",
    "Settings",
    "StoreSettings",
    "Var",
    "boolean",
    "choice",
    "comma_list",
    "core_variables",
    "integer",
    "number",
    "optional",
    "read_section",
    "setting",
    "text",
]
