"""The credentials file: which entry a destination falls under, and what the file may hold."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from yarl import URL

from timefuse.config import ConfigError
from timefuse.plugins.destination_match import MatchTable, parse_match
from timefuse.plugins.http_credentials import HttpCredentials, scrub
from timefuse.plugins.http_credentials_file import BasicAuth, HeaderAuth
from timefuse.plugins.http_settings import HttpSettings

VARIABLE = "TIMEFUSE_HTTP_CREDENTIALS_FILE"
SECRET = "very-secret-value-0123456789"

# -- matching --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("API.Example.com", "api.example.com"),
        ("api.example.com.", "api.example.com"),
        ("api.example.com:8443", "api.example.com:8443"),
        ("api.example.com:443", "api.example.com:443"),
        ("https://API.example.com/hooks", "https://api.example.com:443/hooks"),
        ("https://api.example.com:443/hooks/", "https://api.example.com:443/hooks/"),
        ("http://api.example.com", "http://api.example.com:80/"),
        ("http://api.example.com:8080/x", "http://api.example.com:8080/x"),
        ("[2001:DB8::1]:8443", "[2001:db8::1]:8443"),
        ("https://[2001:db8::1]/x", "https://[2001:db8::1]:443/x"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("10.0.0.7:9000", "10.0.0.7:9000"),
    ],
)
def test_matches_are_normalised_lower_case_with_the_default_port_explicit(
    text: str, key: str
) -> None:
    assert parse_match(text).key == key


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "host"),
        ("api example.com", "spaces"),
        ("ftp://api.example.com/", "http:// or https://"),
        ("https://user:pw@api.example.com/", "user or password"),
        ("https://api.example.com/x?token=1", "query"),
        ("https://api.example.com/x#frag", "fragment"),
        ("2001:db8::1", "brackets"),
        ("api.example.com:99999", "valid"),
        ("api.example.com/hooks", "scheme"),
        ("https:///hooks", "host"),
        ("http://[]@", "user or password|valid"),
        ("[]", "valid|host"),
    ],
)
def test_a_bad_match_says_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_match(text)


TABLE = MatchTable(
    (parse_match(text), text)
    for text in (
        "api.example.com",
        "api.example.com:8443",
        "https://api.example.com/hooks",
        "https://api.example.com/hooks/billing",
        "https://api.example.com/other/",
    )
)


@pytest.mark.parametrize(
    ("url", "entry"),
    [
        # The longest URL prefix wins over shorter ones and over host entries.
        ("https://api.example.com/hooks/billing/42", "https://api.example.com/hooks/billing"),
        ("https://api.example.com/hooks/billing", "https://api.example.com/hooks/billing"),
        ("https://api.example.com/hooks/shipping", "https://api.example.com/hooks"),
        ("https://api.example.com/hooks", "https://api.example.com/hooks"),
        ("https://API.EXAMPLE.COM:443/hooks/x", "https://api.example.com/hooks"),
        ("https://api.example.com./hooks/x", "https://api.example.com/hooks"),
        # A prefix ends at a path segment, unless it ends with "/" itself.
        ("https://api.example.com/hooks-admin", "api.example.com"),
        ("https://api.example.com/hooksx/1", "api.example.com"),
        ("https://api.example.com/other/x", "https://api.example.com/other/"),
        ("https://api.example.com/other", "api.example.com"),
        # A URL prefix holds for its scheme and port only; a host:port for that port.
        ("http://api.example.com/hooks/x", "api.example.com"),
        ("https://api.example.com:8443/hooks/x", "api.example.com:8443"),
        ("http://api.example.com:8443/", "api.example.com:8443"),
        # A bare host holds for any port.
        ("https://api.example.com:9999/", "api.example.com"),
        ("http://api.example.com/", "api.example.com"),
        # Other hosts, including ones that merely end the same, fall under nothing.
        ("https://evil-api.example.com/hooks", None),
        ("https://example.com/hooks", None),
        ("https://api.example.com.evil.test/hooks", None),
    ],
)
def test_the_most_specific_entry_wins(url: str, entry: str | None) -> None:
    assert TABLE.find(URL(url)) == entry


def test_two_spellings_of_one_destination_are_refused() -> None:
    with pytest.raises(ValueError, match="same destination"):
        MatchTable(
            [(parse_match("API.example.com:443"), 1), (parse_match("api.example.com:443"), 2)]
        )


# -- the file --------------------------------------------------------------------------------


def load(tmp_path: Path, toml: str) -> HttpSettings:
    path = tmp_path / "credentials.toml"
    path.write_text(toml)
    return HttpSettings.from_env({VARIABLE: str(path)})


def test_every_kind_of_entry_loads(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(SECRET + "\n")
    (tmp_path / "client-secret").write_text("oauth-" + SECRET)
    settings = load(
        tmp_path,
        f"""
[[destinations]]
match = "hooks.example.com"
header = {{ name = "Authorization", value_file = "token" }}

[[destinations]]
match = "https://billing.example.com/in/"
basic = {{ username = "timefuse", password = "{SECRET}" }}

[[destinations]]
match = "api.example.com:8443"
[destinations.oauth2_client_credentials]
token_url = "https://auth.example.com/token"
client_id = "timefuse"
client_secret_file = "client-secret"
""",
    )

    entries = settings.credentials.entries
    assert [entry.match.key for entry in entries] == [
        "hooks.example.com",
        "https://billing.example.com:443/in/",
        "api.example.com:8443",
    ]
    assert entries[0].auth == HeaderAuth("Authorization", SECRET)  # the newline is dropped
    assert entries[1].auth == BasicAuth("timefuse", SECRET)


def test_no_secret_shows_in_any_repr(tmp_path: Path) -> None:
    (tmp_path / "client-secret").write_text(SECRET)
    settings = load(
        tmp_path,
        f"""
[[destinations]]
match = "a.example.com"
header = {{ name = "X-Api-Key", value = "{SECRET}" }}
[[destinations]]
match = "b.example.com"
basic = {{ username = "u", password = "{SECRET}" }}
[[destinations]]
match = "c.example.com"
[destinations.oauth2_client_credentials]
token_url = "https://auth.example.com/token"
client_id = "timefuse"
client_secret_file = "client-secret"
""",
    )
    credentials = HttpCredentials.from_settings(settings)

    shown = [
        repr(settings),
        repr(settings.credentials),
        *map(repr, settings.credentials.entries),
        repr(credentials),
        *(repr(credentials.for_url(URL(f"https://{h}.example.com/"))) for h in "abc"),
    ]

    assert all(SECRET not in text for text in shown)
    encoded = base64.b64encode(f"u:{SECRET}".encode()).decode()
    assert all(encoded not in text for text in shown)
    assert "3 destination(s)" in repr(settings.credentials)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[[destinations]]\nmatch = "a.example.com"\n', "needs header, basic"),
        (
            '[[destinations]]\nmatch = "a.example.com"\n'
            f'header = {{ name = "X-Key", value = "{SECRET}", vaule_file = "x" }}\n',
            "unknown field",
        ),
        (
            '[[destinations]]\nmatch = "a.example.com"\n'
            f'header = {{ name = "X-Key", value = "{SECRET}", value_file = "x" }}\n',
            "either value or value_file",
        ),
        (
            '[[destinations]]\nmatch = "a.example.com"\nheader = { name = "X-Key" }\n',
            "either value or value_file",
        ),
        (
            '[[destinations]]\nmatch = "a.example.com"\n'
            'header = { name = "X-Key", value_file = "missing" }\n',
            "can't read",
        ),
        (
            '[[destinations]]\nmatch = "a.example.com"\n'
            f'header = {{ name = "webhook-signature", value = "{SECRET}" }}\n',
            "set by timefuse",
        ),
        (
            '[[destinations]]\nmatch = "a.example.com"\n'
            f'header = {{ name = "X Key", value = "{SECRET}" }}\n',
            "not a valid header name",
        ),
        (
            '[[destinations]]\nmatch = "a.example.com"\n'
            f'header = {{ name = "X-Key", value = "{SECRET}" }}\n'
            f'basic = {{ username = "u", password = "{SECRET}" }}\n',
            "at most one",
        ),
        (
            '[[destinations]]\nmatch = "a.example.com"\n'
            f'basic = {{ username = "u:v", password = "{SECRET}" }}\n',
            "without ':'",
        ),
        (
            '[[destinations]]\nmatch = "ftp://a.example.com/"\n'
            f'basic = {{ username = "u", password = "{SECRET}" }}\n',
            "match",
        ),
        (
            '[[destinations]]\nmatch = "a.example.com"\n'
            f'basic = {{ username = "u", password = "{SECRET}" }}\n'
            '[[destinations]]\nmatch = "A.EXAMPLE.COM."\n'
            f'basic = {{ username = "u", password = "{SECRET}" }}\n',
            "same destination",
        ),
        (
            '[[destinations]]\nmatch = "a.example.com"\n[destinations.oauth2_client_credentials]\n'
            'token_url = "http://auth.example.com/token"\nclient_id = "c"\n'
            f'client_secret = "{SECRET}"\n',
            "must be https",
        ),
        (
            '[[destinations]]\nmatch = "a.example.com"\n[destinations.oauth2_client_credentials]\n'
            'token_url = "https://auth.example.com/token"\nclient_id = "c"\n'
            f'client_secret = "{SECRET}"\nauth_method = "private_key_jwt"\n',
            "auth_method",
        ),
        (
            '[[destinations]]\nmatch = "a.example.com"\ntls = { cert_file = "c.pem" }\n',
            "together",
        ),
        (
            '[[destinations]]\nmatch = "a.example.com"\n'
            'tls = { cert_file = "c.pem", key_file = "k.pem" }\n',
            "can't load cert_file",
        ),
        ('[[destinations]]\nmatch = "a.example.com"\ntls = { ca_file = "ca.pem" }\n', "ca_file"),
        ("destinations = [", "Invalid value"),
    ],
)
def test_a_bad_file_stops_start_up_naming_the_entry_never_the_secret(
    tmp_path: Path, toml: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=VARIABLE) as raised:
        load(tmp_path, toml)

    text = str(raised.value)
    assert message in text
    assert SECRET not in text


def test_the_error_names_the_entry_at_fault(tmp_path: Path) -> None:
    toml = (
        '[[destinations]]\nmatch = "a.example.com"\n'
        f'basic = {{ username = "u", password = "{SECRET}" }}\n'
        '[[destinations]]\nmatch = "b.example.com:8443"\n'
        'basic = { username = "u", password_file = "nowhere" }\n'
    )

    with pytest.raises(ConfigError) as raised:
        load(tmp_path, toml)

    assert "destination 1 ('b.example.com:8443'): basic: password_file: can't read" in str(
        raised.value
    )


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="can't read"):
        HttpSettings.from_env({VARIABLE: str(tmp_path / "missing.toml")})


def test_without_the_setting_no_destination_has_credentials() -> None:
    credentials = HttpCredentials.from_settings(HttpSettings.from_env({}))

    presenter = credentials.for_url(URL("https://api.example.com/hooks"))

    assert presenter.ssl is True
    assert presenter.tokens is None


def test_a_loopback_token_endpoint_may_be_plain_http(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        '[[destinations]]\nmatch = "a.example.com"\n[destinations.oauth2_client_credentials]\n'
        'token_url = "http://127.0.0.1:8081/token"\nclient_id = "c"\n'
        f'client_secret = "{SECRET}"\nscope = ["a", "b"]\n',
    )

    [entry] = settings.credentials.entries
    assert entry.auth is not None
    assert getattr(entry.auth, "scope", None) == "a b"


@pytest.mark.parametrize(
    "form", [SECRET + "&x", "a%2Fb%3D", "a/b="], ids=["plain", "encoded", "raw"]
)
def test_scrub_removes_a_secret_in_every_form_it_may_have_travelled_in(form: str) -> None:
    from timefuse.plugins.http_credentials import _secret_forms

    forms = _secret_forms(["a/b=", SECRET + "&x"])

    assert scrub(f"the server said {form}!", forms) == "the server said [redacted]!"
