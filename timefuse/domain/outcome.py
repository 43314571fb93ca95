"""What one delivery attempt produced, and how transport results map onto it."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

ERROR_EXCERPT_LIMIT = 1000

# The longest wait a receiver's Retry-After may ask for (a week, the longest backoff an event
# may set); a longer one is cut to it. The retry policy then caps it at the backoff cap.
RETRY_AFTER_LIMIT_SECONDS = 7 * 86400.0
# RFC 9110 delta-seconds: ASCII digits only. str.isdigit() would take "²" or "①".
_DELTA_SECONDS = re.compile(r"[0-9]+")


class OutcomeKind(enum.StrEnum):
    SUCCESS = "SUCCESS"
    RETRIABLE = "RETRIABLE"
    PERMANENT = "PERMANENT"


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """The result of one attempt, as a delivery type reports it.

    :param kind: success, a failure worth retrying, or a failure that retrying cannot fix.
    :param error: a short human reason for a failure (truncated when stored).
    :param status_code: the transport's status code where it has one (HTTP).
    :param retry_after: seconds the receiver asked us to wait before the next attempt.
    :param response_excerpt: the start of the receiver's answer (a bounded excerpt), for
        completion callbacks; never stored with the attempt.
    """

    kind: OutcomeKind
    error: str | None = None
    status_code: int | None = None
    retry_after: float | None = None
    response_excerpt: str | None = None

    @classmethod
    def success(cls, status_code: int | None = None) -> DeliveryOutcome:
        return cls(OutcomeKind.SUCCESS, status_code=status_code)

    @classmethod
    def retriable(
        cls, error: str, status_code: int | None = None, retry_after: float | None = None
    ) -> DeliveryOutcome:
        return cls(OutcomeKind.RETRIABLE, error, status_code, retry_after)

    @classmethod
    def permanent(cls, error: str, status_code: int | None = None) -> DeliveryOutcome:
        return cls(OutcomeKind.PERMANENT, error, status_code)

    @property
    def succeeded(self) -> bool:
        return self.kind is OutcomeKind.SUCCESS


# 408 Request Timeout, 425 Too Early and 429 Too Many Requests say "try later"; every
# other 4xx says the request itself is wrong, and sending it again changes nothing.
RETRIABLE_CLIENT_ERRORS = frozenset({408, 425, 429})


def classify_http_status(status: int, retry_after: float | None = None) -> DeliveryOutcome:
    """Map an HTTP response status onto an outcome.

    2xx succeeds. 3xx is permanent: redirects are not followed, since following one would let
    a receiver point deliveries at an address the destination check never saw.
    """
    if 200 <= status < 300:
        return DeliveryOutcome.success(status)
    if status in RETRIABLE_CLIENT_ERRORS or 500 <= status < 600:
        return DeliveryOutcome.retriable(f"HTTP {status}", status, retry_after)
    if 300 <= status < 400:
        return DeliveryOutcome.permanent(f"HTTP {status}: redirects are not followed", status)
    return DeliveryOutcome.permanent(f"HTTP {status}", status)


def parse_retry_after(value: str | None, now_epoch: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date.

    A receiver's answer is untrusted input: anything that is neither (``²``, ``-3``, ``1.5``,
    a date out of range) is ``None``, a date in the past is ``0``, and any wait is cut to
    :data:`RETRY_AFTER_LIMIT_SECONDS`. Never raises.
    """
    if not value:
        return None
    value = value.strip(" \t")
    if _DELTA_SECONDS.fullmatch(value):
        # More digits than the limit has are the limit; int() of a few thousand digits would
        # be slow, and Python refuses it past 4300.
        if len(value) > len(str(int(RETRY_AFTER_LIMIT_SECONDS))):
            return RETRY_AFTER_LIMIT_SECONDS
        return min(float(int(value)), RETRY_AFTER_LIMIT_SECONDS)
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:  # "-0000": an HTTP date is in GMT whatever it says
            when = when.replace(tzinfo=UTC)
        wait = when.timestamp() - now_epoch
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return min(max(0.0, wait), RETRY_AFTER_LIMIT_SECONDS)


def excerpt(text: str | None) -> str | None:
    if text is None:
        return None
    return text if len(text) <= ERROR_EXCERPT_LIMIT else text[: ERROR_EXCERPT_LIMIT - 1] + "…"
