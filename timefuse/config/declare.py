"""Declaring settings: a section is a frozen dataclass whose fields each read one variable.

timefuse's own sections (:mod:`timefuse.config.sections`) and every plugin's are declared the
same way, so ``timefuse --help`` and the README's table are generated from the declarations::

    from dataclasses import dataclass

    from timefuse.config import Section, integer, setting


    @dataclass(frozen=True)
    class FileSettings(Section, prefix="TIMEFUSE_FILE_", title="file delivery"):
        root: str = setting("timefuse-files", "Directory every destination is relative to.")
        max_mb: int = setting("100", "Largest file, in MB.", integer(1))

``root`` reads ``TIMEFUSE_FILE_ROOT`` (the prefix and the field's name in upper case) unless
``setting(..., env="OTHER_NAME")`` names the variable. A parser turns the variable's text
into the value and raises :class:`ValueError` with what is wrong; the message the operator
sees names the variable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields, is_dataclass
from typing import Any, ClassVar, Self, TypeVar

Parse = Callable[[str], Any]

_DECLARED = "timefuse.setting"

S = TypeVar("S", bound="Section")


class ConfigError(ValueError):
    """A setting has a value timefuse can't use; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Var:
    """One environment variable: its name, default (as text) and meaning."""

    env: str
    default: str
    help: str


def text(value: str) -> str:
    """The variable's text as it is."""
    return value


@dataclass(frozen=True, slots=True)
class _Declared:
    env: str | None
    default: str
    help: str
    parse: Parse
    none_when_unset: bool

    def default_value(self) -> Any:
        return None if self.none_when_unset else self.parse(self.default)


def setting(
    default: str,
    help: str,
    parse: Parse = text,
    *,
    env: str | None = None,
    none_when_unset: bool = False,
) -> Any:
    """Declare one field of a :class:`Section`.

    :param default: the variable's default, as text (parsed like a value that was set).
    :param help: one line for ``timefuse --help`` and the README.
    :param parse: text to value; raises :class:`ValueError` saying what is wrong.
    :param env: the variable's name; by default the section's prefix and the field's name.
    :param none_when_unset: an unset variable gives ``None`` (an empty one is parsed).
    """
    declared = _Declared(env, default, help, parse, none_when_unset)
    return field(default_factory=declared.default_value, metadata={_DECLARED: declared})


class Section:
    """Base of every settings section; subclass it as a frozen dataclass of :func:`setting`.

    ``prefix`` (default ``TIMEFUSE_``) names the variables of fields declared without ``env``;
    ``title`` heads the section in ``timefuse --help`` and the README.
    """

    env_prefix: ClassVar[str] = "TIMEFUSE_"
    title: ClassVar[str] = ""

    def __init_subclass__(
        cls, *, prefix: str | None = None, title: str | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if prefix is not None:
            cls.env_prefix = prefix
        if title is not None:
            cls.title = title

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        """Read every field from ``env`` (the process environment by default).

        :raises ConfigError: a value the section can't use, naming its variable.
        """
        return read_section(cls, os.environ if env is None else env)

    @classmethod
    def variables(cls) -> list[Var]:
        """The variables this section reads, in declaration order."""
        return [Var(env, declared.default, declared.help) for env, _, declared in _declared(cls)]


def declaration_problem(section: object) -> str | None:
    """``None`` when ``section`` is a usable section class, else what is wrong with it."""
    if not (isinstance(section, type) and issubclass(section, Section) and is_dataclass(section)):
        return f"{section!r} is not a dataclass subclassing timefuse.config.Section"
    for f in fields(section):
        if _DECLARED not in f.metadata:
            return f"field {f.name!r} of {section.__qualname__} is not declared with setting()"
    if not fields(section):
        return f"{section.__qualname__} declares no setting"
    return None


def read_section(section: type[S], env: Mapping[str, str]) -> S:
    """An instance of ``section`` read from ``env``; see :meth:`Section.from_env`."""
    values: dict[str, Any] = {}
    for name, f, declared in _declared(section):
        raw = env.get(name)
        if raw is None and declared.none_when_unset:
            values[f.name] = None
            continue
        text = declared.default if raw is None else raw
        values[f.name] = parse_variable(name, declared.parse, text)
    return section(**values)


def parse_variable(name: str, parse: Parse, raw: str) -> Any:
    """``parse(raw)``, with a failure turned into a :class:`ConfigError` naming ``name``."""
    try:
        return parse(raw)
    except ValueError as exc:
        message = str(exc)
        if name not in message:
            message = f"{name} {message}" if message.startswith("must ") else f"{name}: {message}"
        raise ConfigError(message) from None


def _declared(section: type[Section]) -> list[tuple[str, Field[Any], _Declared]]:
    found = []
    for f in fields(section):  # type: ignore[arg-type]
        declared: _Declared = f.metadata[_DECLARED]
        found.append((declared.env or section.env_prefix + f.name.upper(), f, declared))
    return found
