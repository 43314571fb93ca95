"""One key per receiver, however its URL is spelled; override keys read the same way."""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timefuse.domain import destination as destination_module
from timefuse.domain.destination import (
    canonical_host,
    destination_key,
    destination_limit_keys,
    normalise_destination_limit_key,
)

# -- spellings of one address ----------------------------------------------------------------


@st.composite
def cased(draw: st.DrawFn, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if flip else c for c, flip in zip(text, flips, strict=True))


@st.composite
def hex_groups(draw: st.DrawFn, groups: list[int]) -> list[str]:
    # Each 16-bit group in hex, with up to four digits of zero padding, in any case.
    spelled = []
    for group in groups:
        digits = f"{group:x}"
        width = draw(st.integers(len(digits), 4))
        spelled.append(draw(cased(digits.zfill(width))))
    return spelled


def _groups(address: ipaddress.IPv6Address) -> list[int]:
    packed = address.packed
    return [int.from_bytes(packed[i : i + 2], "big") for i in range(0, 16, 2)]


@st.composite
def ipv6_spelling(draw: st.DrawFn, address: ipaddress.IPv6Address) -> str:
    groups = draw(hex_groups(_groups(address)))
    # Drop one run of zero groups ("::"), or none.
    zero_runs = [
        (start, end)
        for start in range(8)
        for end in range(start + 1, 9)
        if all(g == 0 for g in _groups(address)[start:end])
    ]
    if zero_runs and draw(st.booleans()):
        start, end = draw(st.sampled_from(zero_runs))
        return ":".join(groups[:start]) + "::" + ":".join(groups[end:])
    return ":".join(groups)


@st.composite
def ipv4_spelling(draw: st.DrawFn, address: ipaddress.IPv4Address) -> str:
    """``address`` as a URL host: dotted quad, IPv4-mapped IPv6, or a legacy numeric form."""
    value = int(address)
    form = draw(st.sampled_from(["quad", "mapped-dotted", "mapped-hex", "decimal", "hex"]))
    if form == "quad":
        return str(address)
    if form == "mapped-dotted":
        prefix = draw(st.sampled_from(["::ffff:", "0:0:0:0:0:ffff:", "0::FFFF:", "::0:ffff:"]))
        return f"[{prefix}{address}]"
    if form == "mapped-hex":
        return f"[{draw(ipv6_spelling(ipaddress.IPv6Address((0xFFFF << 32) | value)))}]"
    if form == "decimal":
        return str(value)
    return draw(cased(f"0x{value:x}"))


PORTS = st.integers(1, 65535)


@st.composite
def url(draw: st.DrawFn, host: str, port: int, scheme: str) -> str:
    default = {"http": 80, "https": 443}[scheme]
    if port == default and draw(st.booleans()):
        authority = host
    else:
        authority = f"{host}:{'0' * draw(st.integers(0, 3))}{port}"
    userinfo = draw(st.sampled_from(["", "user@", "user:secret@"]))
    tail = draw(st.sampled_from(["", "/", "/hook", "/a/../b?x=%41#frag", "?q"]))
    return f"{draw(cased(scheme))}://{userinfo}{authority}{tail}"


@given(st.ip_addresses(v=4), PORTS, st.sampled_from(["http", "https"]), st.data())
def test_every_spelling_of_an_ipv4_receiver_has_the_same_key(
    address: ipaddress.IPv4Address, port: int, scheme: str, data: st.DataObject
) -> None:
    spelled = data.draw(url(data.draw(ipv4_spelling(address)), port, scheme))
    assert destination_key("http", spelled) == f"{address}:{port}"


@given(st.ip_addresses(v=6), PORTS, st.sampled_from(["http", "https"]), st.data())
def test_every_spelling_of_an_ipv6_receiver_has_the_same_key(
    address: ipaddress.IPv6Address, port: int, scheme: str, data: st.DataObject
) -> None:
    spelled = data.draw(url(f"[{data.draw(ipv6_spelling(address))}]", port, scheme))
    mapped = address.ipv4_mapped
    expected = f"{mapped}:{port}" if mapped is not None else f"[{address.compressed}]:{port}"
    assert destination_key("http", spelled) == expected


LABELS = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True).filter(
    lambda label: not label.isdigit()
)


@given(st.lists(LABELS, min_size=1, max_size=4), PORTS, st.booleans(), st.data())
def test_every_spelling_of_a_named_receiver_has_the_same_key(
    labels: list[str], port: int, trailing_dot: bool, data: st.DataObject
) -> None:
    name = ".".join([*labels, "example"])
    host = data.draw(cased(name)) + ("." if trailing_dot else "")
    spelled = data.draw(url(host, port, data.draw(st.sampled_from(["http", "https"]))))
    assert destination_key("http", spelled) == f"{name}:{port}"


@given(
    st.tuples(st.ip_addresses(), PORTS),
    st.tuples(st.ip_addresses(), PORTS),
)
def test_different_receivers_have_different_keys(
    first: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int],
    second: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int],
) -> None:
    def canonical(pair: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]) -> tuple:
        address, port = pair
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return address.ipv4_mapped, port
        return address, port

    def spelled(pair: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]) -> str:
        address, port = pair
        host = f"[{address}]" if address.version == 6 else str(address)
        return f"http://{host}:{port}/"

    same_key = destination_key("http", spelled(first)) == destination_key("http", spelled(second))
    assert same_key is (canonical(first) == canonical(second))


# The spellings that once shared a limit of 1/s between them, each as its own destination.
@pytest.mark.parametrize(
    "destination",
    [
        "http://127.0.0.2:8080/",
        "http://127.0.0.2:08080/",
        "http://127.0.0.2:008080/hook",
        "http://[::ffff:127.0.0.2]:8080/",
        "http://[::ffff:7f00:2]:8080/",
        "http://[0:0:0:0:0:ffff:7f00:2]:8080/",
        "http://[0000:0000:0000:0000:0000:FFFF:7F00:0002]:8080/",
        "HTTP://127.0.0.2:8080/x",
        "http://user:pw@127.0.0.2:8080/",
        "https://127.0.0.2:8080/",
        "http://2130706434:8080/",
        "http://0x7f000002:8080/",
        "http://127.2:8080/",
        "http://0177.0.0.2:8080/",
        "http://127.0.0.2.:8080/",
    ],
)
def test_the_known_respellings_of_one_receiver_share_its_key(destination: str) -> None:
    assert destination_key("http", destination) == "127.0.0.2:8080"


@pytest.mark.parametrize(
    ("destination", "key"),
    [
        ("http://127.0.0.2/", "127.0.0.2:80"),
        ("https://hooks.example.com/", "hooks.example.com:443"),
        ("https://Hooks.Example.COM:443/x", "hooks.example.com:443"),
        ("http://CAFÉ.example/", "xn--caf-dma.example:80"),
        ("http://xn--caf-dma.example/", "xn--caf-dma.example:80"),
        ("http://[2001:DB8:0:0::1]/", "[2001:db8::1]:80"),
        ("https://[2001:db8::1]:8443/", "[2001:db8::1]:8443"),
        # More digits than a 32-bit number's 10 (leading zeros included) are a name.
        ("http://01234567890/", "01234567890:80"),
        # A port that is no number is keyed as written, in lower case.
        ("http://example.com:AbC/", "example.com:abc"),
        ("http://example.com:aBc/", "example.com:abc"),
        # A host IDNA refuses (an empty label, a label over 63 characters) is kept as
        # written, in lower case.
        ("http://Bad..Example/", "bad..example:80"),
        ("https://" + "L" * 64 + ".Example/", "l" * 64 + ".example:443"),
    ],
)
def test_the_default_port_is_explicit_and_hosts_canonical(destination: str, key: str) -> None:
    assert destination_key("http", destination) == key


def test_a_destination_that_is_no_http_url_is_keyed_with_its_type() -> None:
    assert destination_key("kafka", "orders") == "kafka:orders"
    assert destination_key("http", "http://[::1]]/") == "http:http://[::1]]/"  # no host
    assert destination_key("file", "/var/spool/a:b") == "file:/var/spool/a:b"
    assert destination_key("http", "ftp://example.com/x") == "http:ftp://example.com/x"


def test_an_http_url_is_one_receiver_whatever_delivery_type_posts_to_it() -> None:
    assert destination_key("slack", "https://hooks.example.com/x") == "hooks.example.com:443"


@given(st.text(max_size=200), st.sampled_from(["http", "kafka"]))
def test_any_text_gets_a_key_without_raising(destination: str, delivery_type: str) -> None:
    for text in (destination, f"http://{destination}", f"https://{destination}:0{destination}"):
        assert isinstance(destination_key(delivery_type, text), str)


# -- operator override keys ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("hooks.example.com:443", "hooks.example.com:443"),
        ("Hooks.Example.COM:0443", "hooks.example.com:443"),
        ("hooks.example.com:65535", "hooks.example.com:65535"),
        ("https://hooks.example.com/", "hooks.example.com:443"),
        ("http://hooks.example.com/any/path?q", "hooks.example.com:80"),
        ("https://hooks.example.com:/", "hooks.example.com:443"),  # an empty port: the default
        ("127.0.0.2:80", "127.0.0.2:80"),
        ("[::ffff:7f00:2]:80", "127.0.0.2:80"),
        ("[2001:DB8::0001]:8443", "[2001:db8::1]:8443"),
        ("café.example:443", "xn--caf-dma.example:443"),
        (" hooks.example.com:443 ", "hooks.example.com:443"),
        # A bare host: every port of it.
        ("Hooks.Example.com", "hooks.example.com"),
        ("hooks.example.com.", "hooks.example.com"),
        ("2001:db8::1", "[2001:db8::1]"),
        ("::1", "[::1]"),
        ("::ffff:127.0.0.2", "127.0.0.2"),
        ("[2001:db8::1]", "[2001:db8::1]"),
        # Other delivery types: the type's case is folded, the destination kept.
        ("kafka:orders", "kafka:orders"),
        ("Kafka:Orders", "kafka:Orders"),
        ("file:/var/spool/a:b", "file:/var/spool/a:b"),
        ("Kafka:Orders:v2", "kafka:Orders:v2"),
        ("slack:https://hooks.example.com/x", "hooks.example.com:443"),
    ],
)
def test_override_keys_are_normalised_like_destinations(text: str, key: str) -> None:
    assert normalise_destination_limit_key(text) == key


@pytest.mark.parametrize(
    ("text", "reason_mentions"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("hooks.example.com:99999", "port"),
        ("hooks.example.com:0", "port"),
        ("hooks.example.com:65536", "port"),
        # Eleven digits are more than a port is read from (a URL with them is keyed as written).
        ("hooks.example.com:00000000443", "port"),
        ("https://hooks.example.com:0x1bb/", "port"),
        ("exa mple.com:443", "host name"),
        ("-bad-.example:443", "host name"),
        ("a..b", "host name"),
        ("[::1", "'['"),
        ("[::1]]", "'['"),
        ("[not-v6]:80", "IPv6"),
        ("ftp://example.com/", "http"),
        ("http://", "http"),
        ("hooks.example.com:", "host:port"),
        ("9:orders", "host:port"),
    ],
)
def test_override_keys_that_name_no_destination_are_refused(
    text: str, reason_mentions: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(reason_mentions)):
        normalise_destination_limit_key(text)


@pytest.mark.parametrize(
    ("override", "destination"),
    [
        ("hooks.example.com:0000000443", "https://hooks.example.com:0000000443/"),
        ("https://hooks.example.com:0000000443/x", "https://hooks.example.com/"),
        ("[fe80::1%25eth0]:80", "http://[fe80::1%25eth0]/"),
        ("[fe80::1%eth0]:80", "http://[fe80::1%25eth0]/"),
    ],
)
def test_an_override_key_matches_the_destination_it_spells(override: str, destination: str) -> None:
    assert normalise_destination_limit_key(override) == destination_key("http", destination)


def test_a_host_name_of_253_characters_is_the_longest_accepted() -> None:
    labels = ["a" * 63, "b" * 63, "c" * 63, "d" * 61]
    longest = ".".join(labels)
    assert len(longest) == 253
    assert normalise_destination_limit_key(f"{longest}:443") == f"{longest}:443"
    with pytest.raises(ValueError, match="host name"):
        normalise_destination_limit_key(f"{longest}d:443")


@given(st.ip_addresses(), PORTS, st.sampled_from(["http", "https"]), st.data())
def test_an_override_written_as_any_spelling_matches_the_destination(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
    port: int,
    scheme: str,
    data: st.DataObject,
) -> None:
    if address.version == 4:
        host = data.draw(ipv4_spelling(address))
    else:
        host = f"[{data.draw(ipv6_spelling(address))}]"
    destination = data.draw(url(host, port, scheme))
    key = destination_key("http", destination)
    assert normalise_destination_limit_key(destination) == key
    assert normalise_destination_limit_key(key) == key  # a key is its own normal form
    bare = key.rpartition(":")[0]
    assert destination_limit_keys("http", destination) == (key, bare)
    assert normalise_destination_limit_key(bare) == bare


def test_a_host_override_applies_after_the_host_and_port_one() -> None:
    assert destination_limit_keys("http", "https://Hooks.Example.com/x") == (
        "hooks.example.com:443",
        "hooks.example.com",
    )
    assert destination_limit_keys("kafka", "orders") == ("kafka:orders",)


def test_a_hosts_reading_is_remembered_but_not_that_of_text_longer_than_any_host() -> None:
    # A client sending made-up hosts of thousands of characters must not fill the memory of
    # every API process with them (they are read, and refused or kept, all the same).
    cache = destination_module._cached_canonical_host
    for n in range(100):
        long_host = "\U0001f600" * 2000 + str(n)
        assert destination_key("http", f"http://{long_host}/x") == f"{long_host.lower()}:80"
    assert cache.cache_info().currsize == 0
    assert destination_key("http", "http://Hooks.Example.COM./a") == "hooks.example.com:80"
    assert destination_key("http", "http://hooks.example.com/b") == "hooks.example.com:80"
    assert cache.cache_info().currsize == 2  # as written: two spellings, one name each


@pytest.mark.parametrize(
    ("destination", "key"),
    [
        ("http://0x7f.1/hook", "127.0.0.1:80"),
        ("https://2130706433/hook", "127.0.0.1:443"),
        ("http://[::FFFF:7f00:1]:8080/", "127.0.0.1:8080"),
        ("http://[0:0::1]/", "[::1]:80"),
    ],
)
def test_an_address_written_another_way_is_keyed_as_its_usual_text(
    destination: str, key: str
) -> None:
    assert destination_key("http", destination) == key


def test_text_as_long_as_a_host_name_with_its_trailing_dot_is_remembered() -> None:
    # The longest name (253 characters) with a trailing dot and one character to spare is
    # still kept; anything longer is no host name and is read afresh each time.
    cache = destination_module._cached_canonical_host
    for length in (252, 253, 254, 255):
        canonical_host("a" * length)
    assert cache.cache_info().currsize == 4
    canonical_host("a" * 256)
    assert cache.cache_info().currsize == 4


@pytest.mark.parametrize(
    ("destination", "key"),
    [
        # A part past what its bytes can hold makes no address (inet_aton and the URL
        # standard refuse it): the host is then a name, keyed as written.
        ("http://1.2.3.256/", "1.2.3.256:80"),
        ("http://1.2.65536/", "1.2.65536:80"),
        ("http://1.16777216/", "1.16777216:80"),
        ("http://4294967296/", "4294967296:80"),
        ("http://1.2.3.255/", "1.2.3.255:80"),
        ("http://1.2.65535/", "1.2.255.255:80"),
        ("http://1.16777215/", "1.255.255.255:80"),
        ("http://4294967295/", "255.255.255.255:80"),
        # "0x" alone is a hex part of value 0.
        ("http://127.0.0.0x/", "127.0.0.0:80"),
        ("http://0x.0x.0x.0x/", "0.0.0.0:80"),
    ],
)
def test_a_legacy_ipv4_part_is_read_within_its_bytes(destination: str, key: str) -> None:
    assert destination_key("http", destination) == key


def test_an_empty_port_is_the_schemes_default() -> None:
    assert destination_key("http", "http://example.com:/x") == "example.com:80"
    assert destination_key("webhook", "https://example.com:/x") == "example.com:443"


def test_a_port_of_more_than_ten_digits_is_keyed_as_written() -> None:
    # No port has eleven digits: the text is no port, and is not read as a number.
    assert destination_key("http", "http://example.com:01234567890/") == ("example.com:01234567890")
    assert destination_key("http", "http://example.com:0123456789/") == "example.com:123456789"


def test_the_port_is_what_follows_the_authoritys_last_colon() -> None:
    # A malformed host with a colon of its own keeps it; the port after the last one is read.
    assert destination_key("http", "http://a:b:0080/") == "a:b:80"


def test_a_legacy_ipv4_address_with_a_trailing_dot_is_the_address_a_leading_dot_a_name() -> None:
    assert canonical_host("0x7f.1.") == "127.0.0.1"
    assert canonical_host("127.1.") == "127.0.0.1"
    assert canonical_host(".127.0.0.1") == ".127.0.0.1"
