from __future__ import annotations

import pytest

from timefuse.config import Settings
from timefuse.plugins import http
from timefuse.plugins.http_guard import URL_FORM, validate_destination
from timefuse.ports.delivery import DeliveryType


@pytest.mark.parametrize(
    "destination",
    [
        "http://example.com/hook",
        "https://example.com:8443/a/b?x=1&y=2",
        "HTTPS://EXAMPLE.COM/hook",
        "http://example.com./hook",
        "http://127.0.0.1:8080/",
        "http://[::1]:8080/hook",
        "https://user:secret@example.com/hook",
        "http://café.example/hook",
        "http://internal_service/hook",
        "http://example.com/hook#fragment",
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


def test_registers_the_http_type_with_a_margin_over_the_http_timeout() -> None:
    settings = Settings.from_env({"TIMEFUSE_HTTP_TIMEOUT_SECONDS": "12"})
    registered: list[DeliveryType] = []

    http.register_delivery_types(register=registered.append, settings=settings)

    [delivery_type] = registered
    assert delivery_type.name == "http"
    assert delivery_type.timeout_seconds == 17
    assert delivery_type.validate_destination("http://example.com/") is None
    assert delivery_type.validate_destination("ftp://example.com/") == URL_FORM
    assert delivery_type.start is not None
    assert delivery_type.stop is not None
