"""Which destinations http delivery accepts, and the guarded connector it reaches them through.

The SSRF guard refuses every address that is not globally reachable (loopback, private,
link-local and cloud metadata, CGNAT, multicast, reserved...) unless an operator allows its
network with ``TIMEFUSE_HTTP_ALLOWED_NETWORKS``. It checks at two places:

- :class:`DestinationGuard` at submission and again before each post, for hosts that are IP
  literals and numeric forms that name an address without looking like one
  (``http://2130706433/``);
- :class:`GuardedResolver` at connection time, on every address a name resolves to then (and
  the transport checks an IP literal's address there too). Names are not resolved at
  submission: DNS rebinding (a name pointing at a public address when the event is submitted
  and at 127.0.0.1 when it is due) would make that check worthless.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from urllib.parse import quote

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from timefuse.plugins.http_settings import HttpSettings, IpNetwork

__all__ = [
    "URL_FORM",
    "USERINFO_REFUSAL",
    "AddressPolicy",
    "DestinationGuard",
    "DestinationRefused",
    "GuardedResolver",
    "parse_address",
    "parse_destination",
]

URL_FORM = "must be an absolute http:// or https:// URL"
USERINFO_REFUSAL = (
    "must not carry credentials (user:password@): they would be sent as an Authorization "
    "header and shown to everyone who can read the event; use per-destination credentials"
)

_SCHEMES = frozenset({"http", "https"})
# yarl (like browsers) silently drops tabs and newlines and strips spaces, so
# "http://host\r\nX-Injected: 1/" would become another host: refuse them instead of guessing.
_UNSAFE_CHARACTERS = re.compile(r"[\x00-\x20\x7f]")
# One DNS label once IDNA-encoded; "_" is tolerated because internal names use it.
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
# A label of the legacy numeric IPv4 forms getaddrinfo still accepts (2130706433, 0x7f.1,
# 0177.0.0.1): decimal, octal or hex. No DNS name is all such labels, since a top-level
# domain is never numeric.
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")
_MAX_HOST_LENGTH = 253
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")

_CACHED_DESTINATIONS = 4096

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOWED_NETWORKS_VARIABLE = "TIMEFUSE_HTTP_ALLOWED_NETWORKS"

# "This network": 0.0.0.0 reaches the local host on Linux, and none of 0/8 is a real peer.
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_PRIVATE = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
_CLOUD_METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "fe80::a9fe:a9fe")
)
# Everything globally routable in IPv6 lies here. Older Pythons call some addresses outside it
# global (::7f00:1, 64:ff9b:1::1, fec0::1), so is_global alone is not enough.
_GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

# The first that matches names why an address is refused; the order puts the most telling
# name first (169.254.169.254 is link-local, but "cloud metadata" says more).
_CATEGORIES: tuple[tuple[str, Callable[[IpAddress], bool]], ...] = (
    ("unspecified", lambda a: a.is_unspecified or a in _THIS_NETWORK),
    ("loopback", lambda a: a.is_loopback),
    ("cloud metadata, link-local", lambda a: a in _CLOUD_METADATA),
    ("link-local", lambda a: a.is_link_local),
    ("multicast", lambda a: a.is_multicast),
    ("shared address space, CGNAT", lambda a: a in _CGNAT),
    ("private", lambda a: any(a in network for network in _PRIVATE)),
    ("site-local", lambda a: a.version == 6 and a.is_site_local),
    ("reserved", lambda a: a.is_reserved),
)


def parse_address(text: str) -> IpAddress | None:
    """``text`` as an IP address (a ``%zone`` suffix allowed), or ``None`` if it is not one."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class AddressPolicy:
    """Which addresses http delivery may connect to: global unicast, and allowed networks.

    :param allowed_networks: networks reachable even though they are not global (an
        operator's internal receivers, test receivers on loopback).
    """

    def __init__(self, allowed_networks: Iterable[IpNetwork] = ()) -> None:
        self._allowed = tuple(allowed_networks)

    def refusal(self, address: IpAddress) -> str | None:
        """``None`` when ``address`` may be reached, else what kind of address it is."""
        if any(address in network for network in self._allowed):
            return None
        if isinstance(address, ipaddress.IPv6Address):
            embedded = _embedded_ipv4(address)
            if embedded is not None:
                kind, ipv4 = embedded
                inner = self.refusal(ipv4)
                return None if inner is None else f"{kind} {ipv4}: {inner}"
        return _category(address)

    def refusal_message(self, address: IpAddress) -> str | None:
        """Why a destination naming ``address`` is refused, or ``None`` if it is allowed."""
        reason = self.refusal(address)
        if reason is None:
            return None
        hint = f"allow it with {ALLOWED_NETWORKS_VARIABLE}"
        return f"address {address} is not allowed ({reason}); {hint}"

    def resolution_message(self, host: str, refused: Iterable[tuple[str, str]]) -> str:
        """Why ``host`` is refused when every address it resolved to was (address, reason)."""
        unique = dict(refused)  # getaddrinfo repeats an address once per protocol
        if len(unique) == 1:
            [(address, reason)] = unique.items()
            return (
                f"destination {host} resolves to {address}, which is not allowed ({reason}); "
                f"allow it with {ALLOWED_NETWORKS_VARIABLE}"
            )
        listed = ", ".join(f"{address} ({reason})" for address, reason in unique.items())
        return (
            f"destination {host} resolves only to addresses that are not allowed: {listed}; "
            f"allow them with {ALLOWED_NETWORKS_VARIABLE}"
        )


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    # These IPv6 forms carry an IPv4 address that the packets end up at: ::ffff:127.0.0.1 is
    # 127.0.0.1 itself, and a 6to4 or NAT64 gateway forwards to the embedded address.
    if address.ipv4_mapped is not None:
        return "IPv4-mapped", address.ipv4_mapped
    if address.sixtofour is not None:
        return "6to4 for", address.sixtofour
    if address in _NAT64:
        return "NAT64 for", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _category(address: IpAddress) -> str | None:
    for name, matches in _CATEGORIES:
        if matches(address):
            return name
    if not address.is_global:
        return "not globally reachable"
    if isinstance(address, ipaddress.IPv6Address) and address not in _GLOBAL_UNICAST_V6:
        return "not global unicast"
    return None


class DestinationRefused(OSError):
    """The destination's address is one http delivery must not reach.

    An ``OSError`` because aiohttp only wraps resolver errors of that type (into
    :class:`aiohttp.ClientConnectorDNSError`, as ``os_error``), where :meth:`from_client_error`
    finds it again.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(errno.EACCES, reason)
        self.reason = reason

    @staticmethod
    def from_client_error(exc: BaseException) -> DestinationRefused | None:
        """The refusal behind an aiohttp connection error, if that is what it was."""
        if isinstance(exc, aiohttp.ClientConnectorError):
            exc = exc.os_error
        return exc if isinstance(exc, DestinationRefused) else None


class DestinationGuard:
    """Checks destinations against one :class:`AddressPolicy`; one per http delivery type.

    :meth:`validate_destination` is what the type registers, so submissions are checked with
    the operator's allowed networks.
    """

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy
        # Per instance, since the answer depends on the policy. Cached because deliver()
        # checks every event's destination on the hot path and most events go to a few
        # webhooks; both results (a URL or a reason) are immutable.
        self.check = functools.lru_cache(maxsize=_CACHED_DESTINATIONS)(self._check)

    @classmethod
    def from_settings(cls, settings: HttpSettings) -> DestinationGuard:
        return cls(AddressPolicy(settings.allowed_networks))

    def validate_destination(self, destination: str) -> str | None:
        """``None`` when http delivery may post to ``destination``, else the reason it can't."""
        checked = self.check(destination)
        return checked if isinstance(checked, str) else None

    def _check(self, destination: str) -> URL | str:
        url = parse_destination(destination)
        if isinstance(url, str):
            return url
        assert url.raw_host is not None  # parse_destination refuses URLs without a host
        return self._refuse_literal(url.raw_host) or url

    def _refuse_literal(self, raw_host: str) -> str | None:
        host = raw_host.removesuffix(".")
        address = parse_address(host)
        if address is not None:
            return self.policy.refusal_message(address)
        if all(_NUMERIC_LABEL.fullmatch(label) for label in host.split(".")):
            return _numeric_host_refusal(host)
        return None  # a name: judged at connection time, on what it resolves to then


def _numeric_host_refusal(host: str) -> str:
    # Whatever address it denotes, nobody means a webhook at "0x7f.1": refusing the form
    # outright beats relying on each platform's getaddrinfo reading it the same way.
    try:
        meant = f" (read as {socket.inet_ntoa(socket.inet_aton(host))})"
    except OSError:
        meant = ""
    return f"has a numeric host {host!r}{meant} that is not a dotted-quad IPv4 address"


# Cached because both the guard and deliver() re-parse the same few destinations over and over.
@functools.lru_cache(maxsize=_CACHED_DESTINATIONS)
def parse_destination(destination: str) -> URL | str:
    """The URL to post to, or the reason ``destination`` is not one http delivery can use.

    Syntax only: whether its address may be reached is :class:`DestinationGuard`'s business.
    The URL's path and query are the destination's own bytes (see :func:`_url_as_written`).
    """
    if _UNSAFE_CHARACTERS.search(destination):
        return "must not contain spaces or control characters"
    try:
        url = URL(destination)
        port = url.port
        as_written = URL(destination, encoded=True)
    except ValueError as exc:
        return f"{URL_FORM} ({exc})"
    except IndexError:
        # yarl 1.25 fails this way on some malformed authorities ("http://[]@").
        return URL_FORM
    if url.scheme not in _SCHEMES or not url.raw_host:
        return URL_FORM
    if "@" in as_written.raw_authority:
        return USERINFO_REFUSAL
    if not _is_valid_host(url.raw_host):
        return f"has an invalid host name {url.raw_host!r}"
    if port is None or not 1 <= port <= 65535:
        return "has an invalid port (must be 1 to 65535)"
    written_port = _written_port(as_written.raw_authority)
    if written_port is not None and written_port.startswith("0"):
        # Accepted, "0080" would be one more spelling of port 80 for a client to choose from.
        return f"has a port with leading zeros ({written_port!r}); write it as {port}"
    return _url_as_written(url, as_written)


def _written_port(authority: str) -> str | None:
    host_end = authority.rfind("]") + 1  # past an IPv6 literal's brackets, or 0
    _, colon, port = authority[host_end:].rpartition(":")
    return port if colon else None


def _url_as_written(url: URL, as_written: URL) -> URL:
    # yarl, left to itself, removes dot-segments and decodes escapes of unreserved characters
    # ("/a/../%7e" would go out as "/~"): the receiver gets the path and query exactly as
    # submitted instead, fragment aside. Only what can't be sent as it is changes: non-ASCII
    # characters are percent-encoded as UTF-8. The host is the checked one (IDNA-encoded).
    host = url.raw_host
    assert host is not None  # parse_destination refuses URLs without a host
    return URL.build(
        scheme=url.scheme,
        host=f"[{host}]" if ":" in host else host,
        port=url.explicit_port,
        path=_ascii_only(as_written.raw_path),
        query_string=_ascii_only(as_written.raw_query_string),
        encoded=True,
    )


def _ascii_only(text: str) -> str:
    return _NON_ASCII.sub(lambda match: quote(match.group(), safe=""), text)


def _is_valid_host(raw_host: str) -> bool:
    if ":" in raw_host:
        return True  # an IPv6 literal, which yarl has already checked
    if len(raw_host) > _MAX_HOST_LENGTH:
        return False
    labels = raw_host.removesuffix(".").split(".")
    return all(_LABEL.fullmatch(label) for label in labels)


class GuardedResolver(AbstractResolver):
    """Resolves names with ``inner`` and keeps only the addresses the policy allows.

    :raises DestinationRefused: from :meth:`resolve`, when no address is left.
    """

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        # aiohttp's own default (getaddrinfo in a thread, or aiodns when installed), so names
        # resolve exactly as they would without the guard. Built here, inside the running
        # loop, which the threaded resolver requires.
        self._inner = inner if inner is not None else aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed: list[ResolveResult] = []
        refused: list[tuple[str, str]] = []
        for result in results:
            reason = self._refusal(result["host"])
            if reason is None:
                allowed.append(result)
            else:
                refused.append((result["host"], reason))
        if refused and not allowed:
            raise DestinationRefused(self._policy.resolution_message(host, refused))
        return allowed

    def _refusal(self, resolved: str) -> str | None:
        address = parse_address(resolved)
        if address is None:
            return "not an IP address"
        return self._policy.refusal(address)

    async def close(self) -> None:
        await self._inner.close()
