"""The http options' rules one by one (timefuse.domain.http_options): each refusal's exact
field and message, each limit at its edge, and what a delivery reads back."""

from __future__ import annotations

import base64

import pytest

from timefuse.domain.http_options import (
    BYTES_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    MAX_HEADERS_BYTES,
    NO_PAYLOAD,
    TEXT_CONTENT_TYPE,
    HttpLimits,
    HttpOptions,
    HttpOptionsError,
    check_options,
    read_options,
)

LIMITS = HttpLimits(max_body_bytes=16, max_timeout_seconds=30.0)
STATUSES = "must be a list of 1 to 50 status codes from 200 to 599"
MEDIA_TYPE = "must be a media type such as text/xml"
ENCODINGS = 'must be "text" or "base64"'
NOT_A_NUMBER = "must be a number of seconds"
VISIBLE = "must hold visible ASCII characters, spaces and tabs only"
UNKNOWN = "is not an http option"
NUL = 'must not contain NUL characters (send such bytes as "base64")'


def refusals(http: object) -> list[tuple[str, str]]:
    _, errors = check_options(http, LIMITS)
    return [(error.field, error.message) for error in errors]


def stored(http: object) -> dict[str, object]:
    value, errors = check_options(http, LIMITS)
    assert errors == []
    return value


def test_an_error_names_its_field_and_says_why() -> None:
    error = HttpOptionsError("http.method", "is wrong")
    assert (error.field, error.message, str(error)) == (
        "http.method",
        "is wrong",
        "http.method: is wrong",
    )


@pytest.mark.parametrize(
    ("http", "expected"),
    [
        (5, [("http", "must be a JSON object")]),
        ({"method": 5}, [("http.method", "must be one of POST, PUT, PATCH, DELETE, GET")]),
        ({"method": "trace"}, [("http.method", "must be one of POST, PUT, PATCH, DELETE, GET")]),
        ({"body": 5}, [("http.body", "must be a string (text, or base64 bytes)")]),
        ({"body": "x", "body_encoding": "hex"}, [("http.body_encoding", ENCODINGS)]),
        ({"body_encoding": "text"}, [("http.body_encoding", "is only meaningful with http.body")]),
        ({"body": "%%%", "body_encoding": "base64"}, [("http.body", "is not valid base64")]),
        ({"body": "x" * 17}, [("http.body", "must be at most 16 bytes")]),
        ({"body": "a\x00b"}, [("http.body", NUL)]),
        ({"body": "é" * 9}, [("http.body", "must be at most 16 bytes")]),  # 18 bytes in UTF-8
        ({"content_type": 5}, [("http.content_type", MEDIA_TYPE)]),
        ({"content_type": "   "}, [("http.content_type", MEDIA_TYPE)]),
        ({"content_type": "textxml"}, [("http.content_type", MEDIA_TYPE)]),
        ({"content_type": "text/xml\r\nX: 1"}, [("http.content_type", MEDIA_TYPE)]),
        ({"content_type": "text/" + "x" * 252}, [("http.content_type", MEDIA_TYPE)]),
        ({"timeout_seconds": True}, [("http.timeout_seconds", NOT_A_NUMBER)]),
        ({"timeout_seconds": float("nan")}, [("http.timeout_seconds", NOT_A_NUMBER)]),
        ({"timeout_seconds": 0.09}, [("http.timeout_seconds", "must be between 0.1 and 30")]),
        ({"timeout_seconds": 30.01}, [("http.timeout_seconds", "must be between 0.1 and 30")]),
        ({"success_statuses": "200"}, [("http.success_statuses", STATUSES)]),
        ({"success_statuses": []}, [("http.success_statuses", STATUSES)]),
        ({"success_statuses": [200] * 51}, [("http.success_statuses", STATUSES)]),
        ({"success_statuses": [600]}, [("http.success_statuses", STATUSES)]),
        ({"success_statuses": ["200"]}, [("http.success_statuses", STATUSES)]),
        ({"b": 1, "a": 2}, [("http.a", UNKNOWN), ("http.b", UNKNOWN)]),
    ],
)  # fmt: skip
def test_each_bad_option_is_refused_with_its_field_and_message(
    http: object, expected: list[tuple[str, str]]
) -> None:
    assert refusals(http) == expected


def test_every_bad_option_is_reported_not_only_the_first() -> None:
    assert refusals({"method": "x", "timeout_seconds": 0, "body": 1}) == [
        ("http.method", "must be one of POST, PUT, PATCH, DELETE, GET"),
        ("http.body", "must be a string (text, or base64 bytes)"),
        ("http.timeout_seconds", "must be between 0.1 and 30"),
    ]


def test_a_bad_body_is_not_also_blamed_on_its_encoding() -> None:
    assert refusals({"body": 5, "body_encoding": "base64"}) == [
        ("http.body", "must be a string (text, or base64 bytes)")
    ]


@pytest.mark.parametrize(
    ("http", "expected"),
    [
        (None, {}),
        ({}, {}),
        ({"method": "patch"}, {"method": "PATCH"}),
        ({"method": None}, {}),
        ({"timeout_seconds": 0.1}, {"timeout_seconds": 0.1}),
        ({"timeout_seconds": 30}, {"timeout_seconds": 30.0}),
        ({"success_statuses": [599, 200, 599]}, {"success_statuses": [200, 599]}),
        ({"success_statuses": list(range(200, 250))}, {"success_statuses": list(range(200, 250))}),
        ({"success_statuses": [204]}, {"success_statuses": [204]}),
        ({"body": "x" * 16}, {"body": "x" * 16}),
        ({"body": base64.b64encode(b"\x00" * 16).decode(), "body_encoding": "base64"},
         {"body": base64.b64encode(b"\x00" * 16).decode(), "body_encoding": "base64"}),
        ({"content_type": "text/" + "x" * 251}, {"content_type": "text/" + "x" * 251}),
    ],
)  # fmt: skip
def test_options_at_their_limits_are_kept(http: object, expected: dict[str, object]) -> None:
    assert stored(http) == expected


def header_refusal(headers: object) -> list[tuple[str, str]]:
    return refusals({"headers": headers})


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"": "x"}, ("http.headers.", "is not a valid header name")),
        ({"X" * 257: "x"}, ("http.headers." + "X" * 64, "is not a valid header name")),
        ({"X:Y": "x"}, ("http.headers.X:Y", "is not a valid header name")),
        ({"Host": "x"}, ("http.headers.Host", "may not be set: it is set from the destination")),
        ({"Webhook-Id": "x"}, ("http.headers.Webhook-Id", "may not be set: the name is reserved")),
        ({"X-A": "1", "x-a": "2"}, ("http.headers.x-a", "is given twice")),
        ({"X-A": None}, ("http.headers.X-A", "must be a string")),
        ({"X-A": "v" * 4097}, ("http.headers.X-A", "must be at most 4096 characters")),
        ({"X-A": "a\x00b"}, ("http.headers.X-A", VISIBLE)),
        ({"X-A": "é"}, ("http.headers.X-A", VISIBLE)),
        ([], ("http.headers", "must be a JSON object of header names to values")),
        ({f"X-{n}": "v" for n in range(33)}, ("http.headers", "must hold at most 32 headers")),
    ],
)  # fmt: skip
def test_each_bad_header_is_refused_with_its_field_and_message(
    headers: object, expected: tuple[str, str]
) -> None:
    assert header_refusal(headers) == [expected]


def test_headers_are_limited_in_their_total_size_names_and_values_together() -> None:
    # 4 headers of a 3-character name and a 4,093-character value: 16,384 bytes, the limit.
    at_limit = {f"X-{n}": "v" * 4093 for n in range(4)}
    assert sum(len(k) + len(v) for k, v in at_limit.items()) == MAX_HEADERS_BYTES
    assert stored({"headers": at_limit}) == {"headers": at_limit}
    over = {**at_limit, "X-4": "v"}
    assert header_refusal(over) == [("http.headers", "must total at most 16384 bytes")]


def test_a_header_name_and_value_at_their_length_limits_are_kept() -> None:
    headers = {"X" * 256: "v" * 4096}
    assert stored({"headers": headers}) == {"headers": headers}


def test_thirty_two_headers_and_tabs_and_spaces_in_values_are_kept() -> None:
    headers = {f"X-{n}": "a b\tc" for n in range(32)}
    assert stored({"headers": headers}) == {"headers": headers}


@pytest.mark.parametrize(
    ("options", "payload", "content_type"),
    [
        (HttpOptions(), b'{"a":1}', JSON_CONTENT_TYPE),
        (HttpOptions(), NO_PAYLOAD, None),
        (HttpOptions(body=b"<a/>"), NO_PAYLOAD, TEXT_CONTENT_TYPE),
        (HttpOptions(body=b"\x00", body_was_base64=True), NO_PAYLOAD, BYTES_CONTENT_TYPE),
        (HttpOptions(body=b"<a/>", content_type="text/xml"), NO_PAYLOAD, "text/xml"),
        (HttpOptions(content_type="application/vnd.a+json"), b"{}", "application/vnd.a+json"),
    ],
)
def test_the_content_type_sent_follows_the_body_sent(
    options: HttpOptions, payload: bytes, content_type: str | None
) -> None:
    assert options.request_content_type(payload) == content_type


def test_the_body_sent_is_the_http_body_else_the_payload_else_nothing() -> None:
    assert HttpOptions(body=b"<a/>").request_body(b'{"a":1}') == b"<a/>"
    assert HttpOptions().request_body(b'{"a":1}') == b'{"a":1}'
    assert HttpOptions().request_body(NO_PAYLOAD) == b""


@pytest.mark.parametrize(
    ("status", "success"), [(199, False), (200, True), (201, True), (299, True), (300, False)]
)
def test_without_success_statuses_any_2xx_is_a_success(status: int, success: bool) -> None:
    assert HttpOptions().is_success(status) is success


def test_with_success_statuses_only_those_are_successes() -> None:
    options = HttpOptions(success_statuses=frozenset({200, 404}))
    assert [options.is_success(s) for s in (200, 201, 404, 500)] == [True, False, True, False]


def test_stored_options_read_back_as_the_delivery_uses_them() -> None:
    raw = bytes(range(8))
    options = read_options(
        {
            "method": "PUT",
            "headers": {"X-A": "1", "X-B": "2"},
            "body": base64.b64encode(raw).decode(),
            "body_encoding": "base64",
            "content_type": "application/x-thing",
            "timeout_seconds": 7,
            "success_statuses": [200, 410],
        }
    )
    assert options == HttpOptions(
        method="PUT",
        headers=(("X-A", "1"), ("X-B", "2")),
        body=raw,
        content_type="application/x-thing",
        timeout_seconds=7.0,
        success_statuses=frozenset({200, 410}),
        body_was_base64=True,
    )


def test_a_text_body_reads_back_as_its_utf8_bytes_and_absent_options_as_defaults() -> None:
    assert read_options({"body": "é"}) == HttpOptions(body="é".encode())
    assert read_options({"headers": "not a mapping", "content_type": 5, "timeout_seconds": "5",
                         "success_statuses": "200", "method": ""}) == HttpOptions()  # fmt: skip
    assert read_options({}) == HttpOptions()
