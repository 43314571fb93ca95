"""The process's configuration: one attribute per section, read from the environment at once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from timefuse.config.declare import Section, Var
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

# In the order of ``timefuse --help`` and the README's table.
CORE_SECTIONS: tuple[type[Section], ...] = (
    StoreSettings,
    KafkaSettings,
    IngestSettings,
    DispatchSettings,
    ApiSettings,
    ServerSettings,
    MaintenanceSettings,
    LogSettings,
    ProcessSettings,
)


@dataclass(frozen=True)
class Settings:
    """Every core section; each component is built from its own.

    ``environ`` is the environment the sections were read from: plugins' sections, declared
    when plugins load, are read from it too.
    """

    store: StoreSettings = field(default_factory=StoreSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    dispatch: DispatchSettings = field(default_factory=DispatchSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    maintenance: MaintenanceSettings = field(default_factory=MaintenanceSettings)
    log: LogSettings = field(default_factory=LogSettings)
    process: ProcessSettings = field(default_factory=ProcessSettings)
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every core section from ``env`` (the process environment by default).

        :raises ConfigError: a value timefuse can't use, naming its variable.
        """
        source = dict(os.environ if env is None else env)
        return cls(
            store=StoreSettings.from_env(source),
            kafka=KafkaSettings.from_env(source),
            ingest=IngestSettings.from_env(source),
            dispatch=DispatchSettings.from_env(source),
            api=ApiSettings.from_env(source),
            server=ServerSettings.from_env(source),
            maintenance=MaintenanceSettings.from_env(source),
            log=LogSettings.from_env(source),
            process=ProcessSettings.from_env(source),
            environ=source,
        )


def core_variables() -> list[Var]:
    """Every variable timefuse itself reads (its delivery types' are declared by them)."""
    return [var for section in CORE_SECTIONS for var in section.variables()]
