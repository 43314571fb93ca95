"""One name per destination: the key its limits, queue and circuit breaker are kept under.

A receiver can be written many ways: ``http://127.0.0.2/``, ``http://127.0.0.2:80/``,
``http://127.0.0.2:0080/``, ``http://[::ffff:7f00:2]/``, ``HTTP://user@127.0.0.2/x``... Keyed on
the text as written, each spelling would get limits of its own, and a tenant could multiply a
receiver's rate limit by respelling its URL. :func:`destination_key` maps every spelling of one
receiver to one key:

- an ``http``/``https`` URL (of any delivery type) becomes ``host:port``: names IDNA-encoded and
  lower case, without a trailing dot; IP addresses in their canonical text (IPv6 compressed,
  in brackets; an IPv4-mapped IPv6 address as the IPv4 address; the legacy numeric IPv4 forms
  ``2130706433`` and ``0x7f.1`` as a dotted quad); the port always explicit (80 or 443 when the
  URL leaves it out), without leading zeros; user info, path, query and fragment ignored;
- anything else is ``<delivery type>:<destination>`` (``kafka:orders``).

:func:`normalise_destination_limit_key` reads an operator's override key into the same form.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_PORTS",
    "canonical_host",
    "destination_key",
    "destination_limit_keys",
    "normalise_destination_limit_key",
]

DEFAULT_PORTS = {"http": 80, "https": 443}

_DIGITS = re.compile(r"[0-9]+")
_HEX = re.compile(r"0x[0-9a-f]*")
_OCTAL = re.compile(r"0[0-7]*")
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
_DELIVERY_TYPE = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_MAX_HOST_LENGTH = 253
_MAX_PORT = 65535
# The byte sizes of the parts of a legacy IPv4 spelling, by how many parts it has: in
# "a.b.c" the last part fills the last two bytes (inet_aton's rules, which getaddrinfo follows).
_PART_BYTES = {1: (4,), 2: (1, 3), 3: (1, 1, 2), 4: (1, 1, 1, 1)}


def destination_key(delivery_type: str, destination: str) -> str:
    """The key of the receiver ``destination`` names; never raises.

    ``host:port`` for http(s) URLs, else ``<delivery_type>:<destination>``. A URL too broken
    to name a receiver still gets a key that is stable for that text.
    """
    authority = _http_authority(destination)
    if authority is None:
        return f"{delivery_type}:{destination}"
    scheme, host, port = authority
    return f"{canonical_host(host)}:{_lenient_port(port, scheme)}"


def destination_limit_keys(delivery_type: str, destination: str) -> tuple[str, ...]:
    """The override keys that apply to ``destination``, the most specific first.

    An http(s) destination is matched by its ``host:port`` and then by its bare host (an
    override for a host applies to every port of it); anything else by its key alone.
    """
    key = destination_key(delivery_type, destination)
    if _http_authority(destination) is None:
        return (key,)
    return (key, key.rpartition(":")[0])


def normalise_destination_limit_key(text: str) -> str:
    """An operator's override key in :func:`destination_key`'s form.

    Accepts ``host:port`` (``hooks.example.com:443``, ``[2001:db8::1]:8443``), an http(s) URL
    (``https://hooks.example.com/`` means ``hooks.example.com:443``), a bare host (every port
    of it: ``hooks.example.com``, ``2001:db8::1``), or ``<delivery type>:<destination>`` for
    other delivery types (``kafka:orders``, kept as written but for the type's case).

    :raises ValueError: naming what is wrong, when ``text`` is none of these.
    """
    text = text.strip()
    if not text:
        raise ValueError("is empty")
    head, colon, tail = text.partition(":")
    authority = _http_authority(text) or (_http_authority(tail) if colon else None)
    if authority is not None:
        scheme, host, port = authority
        return f"{_strict_host(host)}:{_strict_port(port, scheme)}"
    if "://" in text:
        raise ValueError("is a URL but not an http:// or https:// one with a host")
    if text.startswith("["):
        inside, _, bracket_port = _split_bracketed(text)
        if inside is None:
            raise ValueError("has an unclosed '[' or text after ']' that is not ':port'")
        canonical = _strict_host(inside, bracketed=True)
        if bracket_port is None:
            return canonical
        if not bracket_port:  # only a URL's empty port means its scheme's: "[v6]:" names none
            raise ValueError("has ':' after ']' but no port")
        return f"{canonical}:{_strict_port(bracket_port, 'http')}"
    if text.count(":") > 1 and _ip_address(text) is not None:
        return canonical_host(text)  # a bare IPv6 address: every port of it
    if colon and _DIGITS.fullmatch(tail):
        return f"{_strict_host(head)}:{_strict_port(tail, 'http')}"
    if colon:
        if not _DELIVERY_TYPE.fullmatch(head.lower()) or not tail:
            raise ValueError(
                "is neither host:port with a numeric port nor <delivery type>:<destination>"
            )
        return f"{head.lower()}:{tail}"
    return _strict_host(text)


def canonical_host(host: str) -> str:
    """``host`` (as in a URL's authority, IPv6 without brackets) in its canonical text.

    Never raises: a host that is no valid name comes back in lower case.
    """
    # Every submission asks for its destination's host, and most ask for a host asked for
    # just before: the answers for the latest hosts are kept (reading numeric spellings and
    # IDNA is most of what a submission's destination costs). Only for text that can be a
    # host name: a client sending long made-up ones can't fill the cache with them.
    if len(host) > _MAX_HOST_LENGTH + 2:
        return _canonical_host(host)
    return _cached_canonical_host(host)


def _canonical_host(host: str) -> str:
    address = _ip_address(host)
    if address is not None:
        return _address_text(address)
    name = host.removesuffix(".")
    try:
        return name.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return name.lower()


_cached_canonical_host = functools.lru_cache(maxsize=4096)(_canonical_host)


def _http_authority(destination: str) -> tuple[str, str, str | None] | None:
    # (scheme, host, port text or None) of an http(s) URL, else None. urlsplit neither decodes
    # nor normalises, so the host and port are seen as written.
    if "://" not in destination:
        return None
    try:
        parts = urlsplit(destination)
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.netloc:
        return None
    hostport = parts.netloc.rpartition("@")[2]
    if hostport.startswith("["):
        host, _, port = _split_bracketed(hostport)
        if host is None:
            return None
        return scheme, host, port
    host, colon, port_text = hostport.rpartition(":")
    if not colon:
        return scheme, hostport, None
    return scheme, host, port_text


def _split_bracketed(text: str) -> tuple[str | None, str, str | None]:
    # "[v6]" or "[v6]:port": (v6, rest, port or None); (None, ...) when malformed.
    inside, closing, rest = text[1:].partition("]")
    if not closing or (rest and not rest.startswith(":")):
        return None, rest, None
    return inside, rest, rest[1:] if rest else None


def _ip_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if ":" in host:
        try:
            # A zone is written %25 in a URL and % by ipaddress.
            return ipaddress.IPv6Address(host.replace("%25", "%", 1))
        except ValueError:
            return None
    return _legacy_ipv4(host.removesuffix(".").lower())


def _address_text(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return f"[{address.compressed}]"


def _legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    # Dotted quads and the older numeric spellings getaddrinfo still reads (2130706433,
    # 127.1, 0x7f.0.0.1, 0177.0.0.1): each part decimal, octal (leading 0) or hex (0x).
    parts = host.split(".")
    sizes = _PART_BYTES.get(len(parts))
    if sizes is None:
        return None
    value = 0
    for part, size in zip(parts, sizes, strict=True):
        number = _ipv4_part(part)
        if number is None or number >= 256**size:
            return None
        value = value * 256**size + number
    return ipaddress.IPv4Address(value)


def _ipv4_part(part: str) -> int | None:
    if _HEX.fullmatch(part):
        return int(part[2:] or "0", 16)
    if _OCTAL.fullmatch(part):
        return int(part, 8)
    if _DIGITS.fullmatch(part) and len(part) <= 10:
        return int(part)
    return None


def _lenient_port(port: str | None, scheme: str) -> str:
    if port is None or port == "":
        return str(DEFAULT_PORTS[scheme])
    if _DIGITS.fullmatch(port) and len(port) <= 10:
        return str(int(port))
    return port.lower()  # not a port; keyed as written so that the key stays stable


def _strict_port(port: str | None, scheme: str) -> int:
    if port is None or port == "":
        return DEFAULT_PORTS[scheme]
    number = int(port) if _DIGITS.fullmatch(port) and len(port) <= 10 else None
    if number is None or not 1 <= number <= _MAX_PORT:
        raise ValueError(f"has an invalid port {port!r} (must be 1 to {_MAX_PORT})")
    return number


def _strict_host(host: str, *, bracketed: bool = False) -> str:
    if bracketed:
        try:
            return _address_text(ipaddress.IPv6Address(host.replace("%25", "%", 1)))
        except ValueError:
            raise ValueError(f"has an invalid IPv6 address {host!r}") from None
    canonical = canonical_host(host)
    if _ip_address(host) is not None:
        return canonical
    labels = canonical.split(".")
    if len(canonical) > _MAX_HOST_LENGTH or not all(_LABEL.fullmatch(x) for x in labels):
        raise ValueError(f"has an invalid host name {host!r}")
    return canonical
