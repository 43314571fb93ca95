"""Who is looking at the console, and what they may do.

The console takes the API's keys: a visitor signs in once with a key and the session cookie
names that key from then on (:mod:`timefuse.entrypoints.ui.session`). What a key may see and
do is what the API lets it: its sources bound every page, its roles every action, and a
read-only key acts on nothing. Without configured keys the console, like the API, trusts every
caller (timefuse then listens on loopback only) and says so on every page.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request

from timefuse.entrypoints.api.access import TRUSTED, Principal
from timefuse.entrypoints.auth import KeyRing, Role
from timefuse.entrypoints.ui.session import Session, Sessions, new_session


@dataclass(frozen=True, slots=True)
class Abilities:
    """What the visitor's key lets it do; the pages offer only these actions."""

    see_admin: bool  # the destinations page: every source's hosts
    cancel: bool
    reschedule: bool
    redeliver: bool
    bulk_redeliver: bool
    reset_breaker: bool
    manage_schedules: bool  # pause, resume, trigger

    @classmethod
    def of(cls, who: Principal) -> Abilities:
        acts = not who.read_only
        admin = who.has(Role.ADMIN)
        return cls(
            see_admin=admin,
            cancel=acts and who.has(Role.CANCEL),
            # Choosing when an event is delivered is part of submitting it.
            reschedule=acts and who.has(Role.SUBMIT),
            # As in the API: sending an event again takes the submit role.
            redeliver=acts and who.has(Role.SUBMIT),
            bulk_redeliver=acts and admin,
            reset_breaker=acts and admin,
            # As in the API: pausing, resuming and triggering a schedule take the submit role.
            manage_schedules=acts and who.has(Role.SUBMIT),
        )


@dataclass(frozen=True, slots=True)
class Visit:
    """One request's visitor. ``who`` is ``None`` until a key is signed in (keys configured)."""

    session: Session
    who: Principal | None
    open_console: bool  # no keys configured: everyone is trusted
    fresh_session: bool  # the response must set the session cookie

    @property
    def abilities(self) -> Abilities:
        assert self.who is not None
        return Abilities.of(self.who)


def may_sign_in(who: Principal) -> bool:
    # Every page lists events, which the API shows to keys with the read role.
    return who.has(Role.READ)


class Gate:
    """Resolves a request to a :class:`Visit`: its session and the key signed in."""

    def __init__(self, keys: KeyRing | None, sessions: Sessions) -> None:
        self._keys = keys
        self.sessions = sessions

    @property
    def open_console(self) -> bool:
        return self._keys is None

    @property
    def keys(self) -> KeyRing | None:
        return self._keys

    def visit(self, request: Request) -> Visit:
        session = self.sessions.read(request)
        fresh = session is None
        if session is None:
            session = new_session()
        if self._keys is None:
            return Visit(session, TRUSTED, True, fresh)
        who = None
        if session.key_hash is not None:
            key = self._keys.by_hash(session.key_hash)
            # A key removed from the file (and the process restarted) ends its sessions.
            if key is not None:
                who = Principal.of_key(key)
                if not may_sign_in(who):
                    who = None
        return Visit(session, who, False, fresh)


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site.

    Browsers send ``Origin`` with every POST and ``Sec-Fetch-Site`` with every request; a
    request with neither (a script's) is left to the CSRF token alone. Only the host is
    compared: behind a TLS-terminating proxy the scheme seen here may differ from the page's.
    """
    if request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    if origin == "null":
        return False
    return urlsplit(origin).netloc.lower() == request.headers.get("host", "").lower()
