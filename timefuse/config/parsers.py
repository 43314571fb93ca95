"""Parsers of settings' text: each raises :class:`ValueError` saying what is wrong.

The message does not name the variable: :func:`timefuse.config.declare.parse_variable` puts
the name in front, so one parser serves any variable (a plugin's included).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from timefuse.domain.destination import normalise_destination_limit_key
from timefuse.domain.quota import ANY_SOURCE, QuotaTable, SourceQuota

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


# The largest number a setting takes: ten years in seconds. Every number setting is a time in
# seconds or a rate per second; beyond this a time no longer fits a date (a grace of 10^12 s
# before now is before year 1) and "inf" would reach timers and dates as an overflow.
MOST = 10 * 365 * 86_400.0
# The slowest rate a setting takes (one event in ten years: a slower one would make a client
# wait past any date), and the largest count (a cap, a burst, a queue).
LEAST_RATE = 1 / MOST
MOST_WHOLE = 2**31 - 1


def number(low: float = 0.0, high: float = MOST) -> Callable[[str], float]:
    """A number from ``low`` to ``high``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"must be a number, got {text!r}") from None
        if not value >= low:  # NaN included
            raise ValueError(f"must be at least {low:g}, got {value:g}")
        if not value <= high:
            raise ValueError(f"must be at most {high:.15g}, got {value:g}")
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


# The producer properties "accepted means durable" rests on: every in-sync replica has an
# accepted record (acks=all), a retry can't duplicate or reorder it (idempotence), and a
# record the API answered 503 for is failed by librdkafka rather than written later
# (message.timeout.ms follows TIMEFUSE_KAFKA_SUBMIT_TIMEOUT_SECONDS). An override would
# quietly drop a promise, so these are refused (aliases included).
PROTECTED_PRODUCER_KEYS = frozenset(
    {
        "acks",
        "request.required.acks",
        "enable.idempotence",
        "message.timeout.ms",
        "delivery.timeout.ms",
    }
)


def producer_properties(text: str) -> KafkaProperties:
    """librdkafka properties as :func:`kafka_properties`, without the protected ones."""
    properties = kafka_properties(text)
    refused = sorted(PROTECTED_PRODUCER_KEYS & set(properties))
    if refused:
        raise ValueError(
            f"may not set {', '.join(refused)}: timefuse sets them so that an accepted event "
            "is durable (acks=all, an idempotent producer) and the producer stops trying soon "
            "after a submission is answered 503 (message.timeout.ms follows "
            "TIMEFUSE_KAFKA_SUBMIT_TIMEOUT_SECONDS, at least 1 s); a record in flight then may "
            "still be written, which a resubmission can't duplicate"
        )
    return properties


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
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{host}.{key} must be a number >= 0")
            if not 0 <= value <= MOST:  # NaN and Infinity included
                raise ValueError(f"{host}.{key} must be a number from 0 to {MOST:.15g}")
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


_QUOTA_KEYS = frozenset({"rate", "burst", "max_pending"})
# A source is at most this long (the submission rule): a longer key could never match.
_MAX_SOURCE = 100


def source_quotas(text: str) -> QuotaTable:
    """Quotas per source, JSON ``{"billing": {"rate": 50, "burst": 100, "max_pending": 10000},
    "*": {...}}``; a field left out is no limit, and an empty value none at all."""
    if not text.strip():
        return QuotaTable({})
    try:
        raw: Any = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"must be a JSON object: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError("must be a JSON object of source -> quota")
    return QuotaTable({source: _quota(source, entry) for source, entry in raw.items()})


def _quota(source: str, entry: object) -> SourceQuota:
    if source != ANY_SOURCE and (not source.strip() or len(source) > _MAX_SOURCE):
        raise ValueError(f"source {source[:120]!r} must be 1 to {_MAX_SOURCE} characters, or *")
    if not isinstance(entry, dict):
        raise ValueError(f"{source!r} must map to an object with some of {sorted(_QUOTA_KEYS)}")
    if unknown := sorted(set(entry) - _QUOTA_KEYS):
        raise ValueError(f"{source!r}: unknown {unknown}, expected some of {sorted(_QUOTA_KEYS)}")
    for key, value in entry.items():
        whole = key != "rate"
        if isinstance(value, bool) or not isinstance(value, int if whole else int | float):
            kind = "an integer" if whole else "a number"
            raise ValueError(f"{source}.{key} must be {kind}, got {value!r}")
        if whole and value > MOST_WHOLE:
            raise ValueError(f"{source}.{key} must be at most {MOST_WHOLE}, got {value}")
        # Not above 0 is the quota's own refusal; NaN and Infinity are refused here.
        if not whole and not (value <= 0 or LEAST_RATE <= value <= MOST):
            raise ValueError(
                f"{source}.rate must be from {LEAST_RATE:.2g} (one event in ten years) to "
                f"{MOST:.15g} a second, got {value!r}"
            )
    try:
        return SourceQuota(
            rate=None if entry.get("rate") is None else float(entry["rate"]),
            burst=entry.get("burst"),
            max_pending=entry.get("max_pending"),
        )
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
