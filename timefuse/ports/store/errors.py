"""The exceptions every store call may raise, whatever the adapter behind it."""

from __future__ import annotations


class StoreError(Exception):
    """The store failed in a way callers may report but not retry blindly."""


class StoreUnavailable(StoreError):
    """The store can't do it now (down, read-only, out of resources, being reorganised); the
    same call may succeed later. Nothing about the request itself is wrong."""


class StoreRefused(StoreError):
    """The store refuses the values it was given (a value its types can't hold, a constraint
    the row breaks): sending the same values again fails the same way."""
