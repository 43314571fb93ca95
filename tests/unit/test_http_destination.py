from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timefuse.config import ConfigError
from timefuse.plugins import http
from timefuse.plugins.http_guard import URL_FORM, AddressPolicy, DestinationGuard
from timefuse.plugins.http_settings import HttpSettings
from timefuse.ports.delivery import DeliveryType

ALLOWED_VARIABLE = "TIMEFUSE_HTTP_ALLOWED_NETWORKS"


def guard(allowed: str = "") -> DestinationGuard:
    return DestinationGuard.from_settings(HttpSettings.from_env({ALLOWED_VARIABLE: allowed}))


def validate_destination(destination: str) -> str | None:
    return guard().validate_destination(destination)


# -- URL syntax ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "destination",
    [
        "http://example.com/hook",
        "https://example.com:8443/a/b?x=1&y=2",
        "HTTPS://EXAMPLE.COM/hook",
        "http://example.com./hook",
        "http://93.184.216.34:8080/",
        "http://[2606:4700::1111]:8080/hook",
        "http://café.example/hook",
        "http://internal_service/hook",
        "http://example.com/hook#fragment",
        "http://1.2.3.4.example/hook",
    ],
)
def test_accepts_absolute_http_urls(destination: str) -> None:
    assert validate_destination(destination) is None


@pytest.mark.parametrize(
    "destination",
    [
        "",
        "example.com/hook",
        "/hook",
        "ftp://example.com/file",
        "mailto:ops@example.com",
        "javascript:alert(1)",
        "http://",
        "http:///hook",
        "http:example.com",
    ],
)
def test_rejects_what_is_not_an_absolute_http_url(destination: str) -> None:
    assert validate_destination(destination) == URL_FORM


@pytest.mark.parametrize(
    ("destination", "reason_mentions"),
    [
        ("http://exa mple.com/", "spaces or control characters"),
        (" http://example.com/", "spaces or control characters"),
        ("http://example.com/hook\n", "spaces or control characters"),
        ("http://host\r\nX-Injected: 1/", "spaces or control characters"),
        ("http://example.com:99999/", URL_FORM),
        ("http://example.com:abc/", URL_FORM),
        ("http://[::1/", URL_FORM),
        ("http://[]@", URL_FORM),
        ("http://[]@example.com/", URL_FORM),
        ("http://example.com:0/", "port"),
        ("http://-bad-.example/", "host"),
        ("http://a..b/", "host"),
        ("http://%41.example/", "host"),
        ("http://" + "a" * 64 + ".example/", "host"),
    ],
)
def test_rejects_malformed_urls_with_a_reason(destination: str, reason_mentions: str) -> None:
    reason = validate_destination(destination)
    assert reason is not None
    assert reason_mentions in reason


@pytest.mark.parametrize(
    "destination",
    [
        "https://user:secret@example.com/hook",
        "https://user@example.com/hook",
        "https://:secret@example.com/hook",
        "https://@example.com/hook",
        "http://user%40corp:p%3Ass@[2606:4700::1111]:8080/",
    ],
)
def test_refuses_credentials_in_the_url_pointing_to_per_destination_credentials(
    destination: str,
) -> None:
    reason = validate_destination(destination)
    assert reason is not None
    assert "credentials" in reason
    assert "per-destination credentials" in reason
    assert "secret" not in reason


@pytest.mark.parametrize(
    ("destination", "written", "port"),
    [
        ("http://example.com:080/", "080", 80),
        ("https://example.com:0443/hook", "0443", 443),
        ("http://example.com:00008080/", "00008080", 8080),
        ("http://[2606:4700::1111]:08080/", "08080", 8080),
    ],
)
def test_refuses_ports_with_leading_zeros_naming_the_port(
    destination: str, written: str, port: int
) -> None:
    reason = validate_destination(destination)
    assert reason == f"has a port with leading zeros ({written!r}); write it as {port}"


@pytest.mark.parametrize(
    ("destination", "sent"),
    [
        # Dot-segments, escapes of unreserved characters, empty segments, case in escapes.
        ("http://example.com/a/../b/./c", "/a/../b/./c"),
        ("http://example.com/%7euser/%41%2f%2F", "/%7euser/%41%2f%2F"),
        ("http://example.com//double//slash/", "//double//slash/"),
        ("http://example.com/p?b=2&a=1&a=%20&x=a/../b&y=%7E", "/p?b=2&a=1&a=%20&x=a/../b&y=%7E"),
        ("http://example.com/p?flag&=&k=", "/p?flag&=&k="),
        ("http://example.com/sub-delims!$&'()*+,;=:@", "/sub-delims!$&'()*+,;=:@"),
        ("http://example.com", "/"),
        ("http://example.com?q=1", "/?q=1"),
        ("http://example.com/hook#fragment", "/hook"),
        # What can't go on the wire as it is: non-ASCII, as UTF-8 escapes.
        ("http://example.com/café?q=é", "/caf%C3%A9?q=%C3%A9"),
    ],
)
def test_the_request_target_is_the_destination_as_written(destination: str, sent: str) -> None:
    url = guard().check(destination)
    assert not isinstance(url, str), url
    assert url.raw_path_qs == sent


def test_the_host_sent_to_is_the_checked_one() -> None:
    url = guard().check("https://CAFÉ.example:8443/x")
    assert not isinstance(url, str), url
    assert (url.raw_host, url.port, url.scheme) == ("xn--caf-dma.example", 8443, "https")
    v6 = guard().check("http://[2606:4700:0::1111]:8080/y")
    assert not isinstance(v6, str), v6
    assert v6.host_port_subcomponent == "[2606:4700::1111]:8080"


# -- which addresses may be reached ----------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("ff0e::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("100.64.0.1", "CGNAT"),
        ("100.127.255.254", "CGNAT"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.1", "not globally reachable"),
        ("198.18.0.1", "not globally reachable"),
        ("2001:db8::1", "not globally reachable"),
        ("fec0::1", "site-local"),
        ("::7f00:1", "reserved"),
        ("64:ff9b:1::a00:1", "reserved"),
        # IPv6 forms that carry an IPv4 address are judged by that address.
        ("::ffff:127.0.0.1", "IPv4-mapped 127.0.0.1: loopback"),
        ("::ffff:169.254.169.254", "IPv4-mapped 169.254.169.254: cloud metadata"),
        ("64:ff9b::7f00:1", "NAT64 for 127.0.0.1: loopback"),
        ("64:ff9b::a00:1", "NAT64 for 10.0.0.1: private"),
        ("2002:7f00:1::", "6to4 for 127.0.0.1: loopback"),
        ("2002:c0a8:101::1", "6to4 for 192.168.1.1: private"),
    ],
)
def test_refuses_addresses_that_are_not_globally_reachable(address: str, kind: str) -> None:
    refusal = AddressPolicy().refusal(ipaddress.ip_address(address))

    assert refusal is not None
    assert kind in refusal


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "93.184.216.34",
        "1.1.1.1",
        "100.63.255.255",  # just below CGNAT
        "100.128.0.0",  # just above it
        "172.32.0.1",  # just above 172.16.0.0/12
        "2606:4700::1111",
        "2a00:1450:4007:80e::200e",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",  # NAT64 to a public address, as DNS64 hands out
        "2002:808:808::1",
    ],
)
def test_allows_global_unicast_addresses(address: str) -> None:
    assert AddressPolicy().refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("allowed", "address", "refused"),
    [
        ("127.0.0.0/8", "127.0.0.1", False),
        ("127.0.0.0/8", "::ffff:127.0.0.1", False),
        ("127.0.0.0/8", "::1", True),
        ("127.0.0.0/8", "10.0.0.1", True),
        ("10.0.0.0/8,fd00::/8", "10.20.30.40", False),
        ("10.0.0.0/8,fd00::/8", "fd00::1", False),
        ("10.0.0.0/8,fd00::/8", "fc00::1", True),
        ("10.0.0.0/8,fd00::/8", "192.168.0.1", True),
        ("169.254.169.254/32", "169.254.169.254", False),
        ("169.254.169.254/32", "169.254.169.253", True),
        ("10.1.2.3", "10.1.2.3", False),
        ("10.1.2.3", "10.1.2.4", True),
        ("::1/128", "::1", False),
    ],
)
def test_allowed_networks_open_exactly_what_they_name(
    allowed: str, address: str, refused: bool
) -> None:
    networks = HttpSettings.from_env({ALLOWED_VARIABLE: allowed}).allowed_networks
    refusal = AddressPolicy(networks).refusal(ipaddress.ip_address(address))

    assert (refusal is not None) is refused


# -- destinations naming an address ----------------------------------------------------------


@pytest.mark.parametrize(
    ("destination", "address"),
    [
        ("http://127.0.0.1:8080/hook", "127.0.0.1"),
        ("http://127.0.0.1./hook", "127.0.0.1"),
        ("http://[::1]:8080/hook", "::1"),
        ("http://[::ffff:127.0.0.1]/hook", "::ffff:7f00:1"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("http://10.0.0.8/hook", "10.0.0.8"),
        ("http://0.0.0.0:8080/hook", "0.0.0.0"),
        ("http://[fe80::1%25eth0]/hook", "fe80::1"),
    ],
)
def test_rejects_literal_forbidden_addresses_at_submission(destination: str, address: str) -> None:
    reason = validate_destination(destination)

    assert reason is not None
    assert f"address {address}" in reason
    assert "is not allowed" in reason
    assert ALLOWED_VARIABLE in reason


@pytest.mark.parametrize(
    "host", ["2130706433", "0x7f.1", "017700000001", "127.1", "127.000.000.001", "0x7f000001"]
)
def test_rejects_numeric_hosts_that_are_not_dotted_quads(host: str) -> None:
    reason = validate_destination(f"http://{host}/hook")

    assert reason is not None
    assert "numeric host" in reason
    assert "127.0.0.1" in reason  # what getaddrinfo would have connected to


def test_numeric_host_forms_stay_refused_even_when_their_address_is_allowed() -> None:
    assert guard("127.0.0.0/8").validate_destination("http://2130706433/") is not None


def test_a_literal_address_in_an_allowed_network_is_accepted() -> None:
    allowing = guard("127.0.0.0/8,::1/128")

    assert allowing.validate_destination("http://127.0.0.1:8080/hook") is None
    assert allowing.validate_destination("http://[::1]:8080/hook") is None
    assert allowing.validate_destination("http://10.0.0.1/hook") is not None


def test_names_are_left_to_the_connection_time_check() -> None:
    # Resolving at submission would be slow and proves nothing: the answer can change by the
    # time the event is due. The guarded resolver judges names when they are connected to.
    assert validate_destination("http://localhost:8080/hook") is None


# -- settings and registration ---------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["10.0.0.0/33", "not-a-network", "10.0.0.5/8", "10.0.0.0/8;fd00::/8", "fd00::/129"]
)
def test_an_invalid_allowed_network_is_a_config_error_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match=ALLOWED_VARIABLE):
        HttpSettings.from_env({ALLOWED_VARIABLE: value})


def test_allowed_networks_default_to_none() -> None:
    assert HttpSettings.from_env({}).allowed_networks == ()


def test_allowed_networks_are_a_comma_list_with_spaces_tolerated() -> None:
    networks = HttpSettings.from_env({ALLOWED_VARIABLE: " 10.0.0.0/8 , fd00::/8 ,"})

    assert networks.allowed_networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("fd00::/8"),
    )


def registered(env: dict[str, str]) -> DeliveryType:
    types: list[DeliveryType] = []
    http.HttpPlugin().register_delivery_types(types.append, HttpSettings.from_env(env))
    [delivery_type] = types
    return delivery_type


def test_registers_the_http_type_with_a_margin_over_the_http_timeout() -> None:
    delivery_type = registered({"TIMEFUSE_HTTP_TIMEOUT_SECONDS": "12"})

    assert delivery_type.name == "http"
    assert delivery_type.timeout_seconds == 17
    assert delivery_type.validate_destination("http://example.com/") is None
    assert delivery_type.validate_destination("ftp://example.com/") == URL_FORM
    assert delivery_type.start is not None
    assert delivery_type.stop is not None


def test_the_registered_validator_applies_the_configured_allowed_networks() -> None:
    default = registered({})
    allowing = registered({ALLOWED_VARIABLE: "127.0.0.0/8"})

    assert default.validate_destination("http://127.0.0.1:8080/hook") is not None
    assert allowing.validate_destination("http://127.0.0.1:8080/hook") is None


@given(
    st.sampled_from(["", "http://", "https://", "http://example.com", "http://[::1]:"]),
    st.text(max_size=80),
)
def test_any_destination_gets_a_url_or_a_reason_without_raising(prefix: str, text: str) -> None:
    checked = guard().check(prefix + text)
    assert isinstance(checked, str) or checked.raw_path_qs.isascii()
