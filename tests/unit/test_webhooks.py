"""Standard Webhooks signatures: the receiver-side helpers, the signer, and its settings."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from timefuse.config import ConfigError
from timefuse.plugins.http_settings import HttpSettings
from timefuse.plugins.webhook_signing import WebhookSigner
from timefuse.webhooks import WebhookVerificationError, decode_secret, sign, verify

# The specification's test vector.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_PAYLOAD = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

OTHER_SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()


def vector_headers(signature: str = VECTOR_SIGNATURE) -> dict[str, str]:
    return {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": signature,
    }


def verify_vector(
    payload: bytes = VECTOR_PAYLOAD,
    headers: dict[str, str] | None = None,
    secret: str = VECTOR_SECRET,
    now: float = VECTOR_TIMESTAMP,
) -> None:
    verify(payload, vector_headers() if headers is None else headers, secret, now=now)


# -- sign and verify -------------------------------------------------------------------------


def test_sign_reproduces_the_specification_test_vector() -> None:
    assert sign(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_PAYLOAD, VECTOR_SECRET) == VECTOR_SIGNATURE


def test_sign_takes_the_secret_with_or_without_prefix_or_as_key_bytes() -> None:
    bare = VECTOR_SECRET.removeprefix("whsec_")
    key = decode_secret(VECTOR_SECRET)

    assert sign(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_PAYLOAD, bare) == VECTOR_SIGNATURE
    assert sign(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_PAYLOAD, key) == VECTOR_SIGNATURE


def test_verify_accepts_the_specification_test_vector() -> None:
    verify_vector()


def test_verify_matches_header_names_case_insensitively() -> None:
    headers = {name.title(): value for name, value in vector_headers().items()}

    verify_vector(headers=headers)


@pytest.mark.parametrize("position", [0, 1, len(VECTOR_PAYLOAD) // 2, len(VECTOR_PAYLOAD) - 1])
def test_verify_fails_when_one_byte_of_the_body_changes(position: int) -> None:
    tampered = bytearray(VECTOR_PAYLOAD)
    tampered[position] ^= 0x01

    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify_vector(payload=bytes(tampered))


def test_verify_fails_with_the_wrong_secret() -> None:
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify_vector(secret=OTHER_SECRET)


@pytest.mark.parametrize("header", ["webhook-id", "webhook-timestamp"])
def test_verify_fails_when_the_signed_metadata_changes(header: str) -> None:
    headers = vector_headers()
    headers[header] = "msg_other" if header == "webhook-id" else str(VECTOR_TIMESTAMP + 1)

    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify_vector(headers=headers)


@pytest.mark.parametrize(
    ("offset", "message"), [(-301, "too old"), (301, "future"), (-3600, "too old")]
)
def test_verify_refuses_a_timestamp_out_of_tolerance(offset: int, message: str) -> None:
    # The signature is genuine: only the clock says this is a replay.
    with pytest.raises(WebhookVerificationError, match=message):
        verify_vector(now=VECTOR_TIMESTAMP - offset)


@pytest.mark.parametrize("offset", [-300, 0, 300])
def test_verify_accepts_a_timestamp_within_tolerance(offset: int) -> None:
    verify_vector(now=VECTOR_TIMESTAMP + offset)


def test_verify_uses_the_given_tolerance() -> None:
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(
            VECTOR_PAYLOAD,
            vector_headers(),
            VECTOR_SECRET,
            tolerance_seconds=10,
            now=VECTOR_TIMESTAMP + 11,
        )


def test_verify_reads_the_system_clock_by_default() -> None:
    # The vector is from 2021: far outside the default tolerance today.
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(VECTOR_PAYLOAD, vector_headers(), VECTOR_SECRET)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_verify_names_a_missing_header(missing: str) -> None:
    headers = vector_headers()
    del headers[missing]

    with pytest.raises(WebhookVerificationError, match=f"missing {missing}"):
        verify_vector(headers=headers)


@pytest.mark.parametrize("timestamp", ["soon", "1614265330.5", "-1614265330", "١٦١٤٢٦٥٣٣٠"])
def test_verify_refuses_a_timestamp_that_is_not_unix_seconds(timestamp: str) -> None:
    headers = {**vector_headers(), "webhook-timestamp": timestamp}

    with pytest.raises(WebhookVerificationError, match="not a Unix time"):
        verify_vector(headers=headers)


@pytest.mark.parametrize(
    "signatures",
    [
        f"v1a,bm9wZQ== {VECTOR_SIGNATURE}",
        f"v1,bm9wZQ== {VECTOR_SIGNATURE}",
        f"v1,!!!not-base64!!! {VECTOR_SIGNATURE}",
        f"garbage {VECTOR_SIGNATURE} v2,{VECTOR_SIGNATURE[3:]}",
    ],
)
def test_verify_accepts_a_list_where_any_one_signature_matches(signatures: str) -> None:
    verify_vector(headers=vector_headers(signatures))


@pytest.mark.parametrize(
    "signatures",
    [f"v2,{VECTOR_SIGNATURE[3:]}", f"v1a,{VECTOR_SIGNATURE[3:]}", VECTOR_SIGNATURE[3:], "v1,"],
)
def test_verify_refuses_when_no_v1_signature_matches(signatures: str) -> None:
    with pytest.raises(WebhookVerificationError):
        verify_vector(headers=vector_headers(signatures))


def test_verify_reports_an_unusable_secret_as_a_verification_error() -> None:
    with pytest.raises(WebhookVerificationError, match="secret"):
        verify_vector(secret="whsec_not base64!")


# -- the signer ------------------------------------------------------------------------------


def test_the_signer_reproduces_the_specification_test_vector() -> None:
    signer = WebhookSigner({"billing": [VECTOR_SECRET]})

    signature = signer.signature("billing", VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_PAYLOAD)

    assert signature == VECTOR_SIGNATURE


def test_during_a_rotation_a_receiver_knowing_either_secret_verifies() -> None:
    signer = WebhookSigner({"billing": [OTHER_SECRET, VECTOR_SECRET]})
    signature = signer.signature("billing", VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_PAYLOAD)
    assert signature is not None
    headers = vector_headers(signature)

    assert len(signature.split(" ")) == 2
    verify_vector(headers=headers, secret=VECTOR_SECRET)
    verify_vector(headers=headers, secret=OTHER_SECRET)
    with pytest.raises(WebhookVerificationError):
        verify_vector(headers=headers, secret="whsec_" + base64.b64encode(b"x" * 32).decode())


def test_a_source_without_secrets_is_not_signed() -> None:
    signer = WebhookSigner({"billing": [VECTOR_SECRET]})

    assert signer.signature("shipping", VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_PAYLOAD) is None


def test_the_star_entry_signs_sources_not_listed_and_a_listed_source_replaces_it() -> None:
    signer = WebhookSigner({"*": [VECTOR_SECRET], "billing": [OTHER_SECRET], "legacy": []})

    def signature(source: str) -> str | None:
        return signer.signature(source, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_PAYLOAD)

    assert signature("shipping") == VECTOR_SIGNATURE
    assert signature("billing") == sign(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_PAYLOAD, OTHER_SECRET)
    assert signature("legacy") is None


# -- settings --------------------------------------------------------------------------------

SECRETS_VARIABLE = "TIMEFUSE_WEBHOOK_SECRETS"
FILE_VARIABLE = "TIMEFUSE_WEBHOOK_SECRETS_FILE"


def test_secrets_are_read_by_source_one_secret_or_a_list() -> None:
    env = {
        SECRETS_VARIABLE: json.dumps({"billing": [VECTOR_SECRET, OTHER_SECRET], "*": VECTOR_SECRET})
    }

    secrets = HttpSettings.from_env(env).webhook_secrets

    assert dict(secrets) == {"billing": (VECTOR_SECRET, OTHER_SECRET), "*": (VECTOR_SECRET,)}


def test_no_secrets_by_default() -> None:
    settings = HttpSettings.from_env({})

    assert dict(settings.webhook_secrets) == {}
    assert dict(settings.webhook_secrets_file) == {}


def test_the_settings_repr_never_shows_a_secret() -> None:
    settings = HttpSettings.from_env({SECRETS_VARIABLE: json.dumps({"billing": [VECTOR_SECRET]})})

    assert "MfKQ9r8G" not in repr(settings)
    assert "billing" in repr(settings.webhook_secrets)


@pytest.mark.parametrize(
    "value",
    [
        "not json",
        '["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]',
        '{"billing": 42}',
        '{"billing": [42]}',
        '{"": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]}',
        '{"billing": ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]}',
        '{"billing": ["whsec_not base64!"]}',
        '{"billing": ["whsec_c2hvcnQ="]}',
        '{"billing": ["whsec_' + base64.b64encode(b"k" * 65).decode() + '"]}',
    ],
)
def test_an_invalid_secrets_value_is_a_config_error_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match=SECRETS_VARIABLE) as raised:
        HttpSettings.from_env({SECRETS_VARIABLE: value})

    assert "MfKQ9r8G" not in str(raised.value).replace(value, "")


def test_a_config_error_does_not_quote_the_secret() -> None:
    short = "whsec_" + base64.b64encode(b"too short").decode()

    with pytest.raises(ConfigError) as raised:
        HttpSettings.from_env({SECRETS_VARIABLE: json.dumps({"billing": [short]})})

    assert short not in str(raised.value)
    assert "secret 0 of source 'billing'" in str(raised.value)


def test_secrets_can_come_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"billing": [VECTOR_SECRET]}))

    secrets = HttpSettings.from_env({FILE_VARIABLE: str(path)}).webhook_secrets_file

    assert dict(secrets) == {"billing": (VECTOR_SECRET,)}


@pytest.mark.parametrize("content", [None, "not json", '{"billing": ["whsec_c2hvcnQ="]}'])
def test_an_unreadable_or_invalid_secrets_file_is_a_config_error(
    tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "secrets.json"
    if content is not None:
        path.write_text(content)

    with pytest.raises(ConfigError, match=FILE_VARIABLE):
        HttpSettings.from_env({FILE_VARIABLE: str(path)})


def test_the_signer_merges_the_variable_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"billing": [OTHER_SECRET, VECTOR_SECRET]}))
    settings = HttpSettings.from_env(
        {SECRETS_VARIABLE: json.dumps({"billing": [VECTOR_SECRET]}), FILE_VARIABLE: str(path)}
    )

    signature = WebhookSigner.from_settings(settings).signature(
        "billing", VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_PAYLOAD
    )

    assert signature is not None
    assert signature.split(" ") == [
        VECTOR_SIGNATURE,
        sign(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_PAYLOAD, OTHER_SECRET),
    ]
