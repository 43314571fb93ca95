"""Parsers of settings' text: each raises :class:`ValueError` saying what is wrong.

The message does not name the variable: :func:`timefuse.config.declare.parse_variable` puts
the name in front, so one parser serves any variable (a plugin's included).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from timefuse.domain.destination import normalise_destination_limit_key

T = TypeVar("T")

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def integer(low: int = 0, high: int = 2**31) -> Callable[[str], int]:
    """A whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"must be an integer, got {text!r}") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def number(low: float = 0.0) -> Callable[[str], float]:
    """A number of at least ``low``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"must be a number, got {text!r}") from None
        if not value >= low:  # NaN included
            raise ValueError(f"must be at least {low:g}, got {value:g}")
        return value

    return parse


def choice(*allowed: str) -> Callable[[str], str]:
    """One of ``allowed``, in any case (returned in lower case)."""

    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}, got {text!r}")
        return value

    return parse


def boolean(text: str) -> bool:
    """``true``/``false`` (or ``1``/``0``, ``yes``/``no``, ``on``/``off``); empty is false."""
    value = text.strip().lower()
    if value not in _TRUE + _FALSE:
        raise ValueError(f"must be true or false, got {text!r}")
    return value in _TRUE


def comma_list(text: str) -> tuple[str, ...]:
    """Comma-separated words, blanks dropped."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def optional(parse: Callable[[str], T]) -> Callable[[str], T | None]:
    """``None`` for an empty value, else ``parse``'s."""

    def parse_optional(text: str) -> T | None:
        return parse(text) if text.strip() else None

    return parse_optional


KafkaProperties = Mapping[str, "str | int | float | bool"]


def kafka_properties(text: str) -> KafkaProperties:
    """librdkafka properties as one JSON object (``{"linger.ms": 5}``); empty is none.

    One variable per property would need a naming scheme for dotted keys, and JSON keeps
    numbers and booleans typed.
    """
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"must be a JSON object: {exc}") from None
    if not isinstance(value, dict) or not all(
        isinstance(v, str | int | float | bool) for v in value.values()
    ):
        raise ValueError(
            "must be a JSON object of librdkafka properties to strings, numbers or booleans, "
            f"got {text!r}"
        )
    return value


_LIMIT_KEYS = frozenset({"concurrency", "rate", "burst", "queue"})

DestinationLimitTable = Mapping[str, Mapping[str, float]]


def destination_limits(text: str) -> DestinationLimitTable:
    """Per-destination limits, JSON ``{"host:port": {"concurrency": 10, "rate": 50}}``.

    Keys are read into the dispatcher's canonical destination keys, so that an override for
    ``hooks.example.com:443`` holds for https://hooks.example.com/ however the URL is spelled.
    """
    if not text.strip():
        return {}
    try:
        raw: Any = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"must be a JSON object: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError("must be a JSON object of host -> limits")
    limits: dict[str, Mapping[str, float]] = {}
    written_as: dict[str, str] = {}
    for host, entry in raw.items():
        if not isinstance(entry, dict) or not set(entry) <= _LIMIT_KEYS:
            raise ValueError(f"{host!r} must map to an object with {sorted(_LIMIT_KEYS)}")
        for key, value in entry.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{host}.{key} must be a number >= 0")
        try:
            destination = normalise_destination_limit_key(host)
        except ValueError as exc:
            raise ValueError(
                f"key {host!r} {exc}; write host:port, a host, an http(s) URL "
                "or <delivery type>:<destination>"
            ) from None
        if destination in written_as:
            raise ValueError(
                f"keys {written_as[destination]!r} and {host!r} both name {destination}"
            )
        written_as[destination] = host
        limits[destination] = {key: float(value) for key, value in entry.items()}
    return limits
