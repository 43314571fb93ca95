"""Dated signing keys: ed25519 signatures, the keyring file, and which keys sign when."""

from __future__ import annotations

import base64
import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import standardwebhooks
import structlog

from timefuse.config import ConfigError
from timefuse.entrypoints.cli import main
from timefuse.plugins.http_settings import HttpSettings
from timefuse.plugins.signing_keys import KeyringError, SigningKey, SigningKeyring
from timefuse.plugins.webhook_signing import WebhookSigner
from timefuse.webhooks import (
    WebhookVerificationError,
    new_secret,
    new_signing_key,
    public_key_of,
    sign,
    sign_asymmetric,
    verify,
)

# The Standard Webhooks test vectors: the specification's v1 vector, and the v1a (ed25519)
# vector of its reference libraries.
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
PAYLOAD = b'{"test": 2432232314}'
V1_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
V1_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
V1A_KEY = "whsk_VEVTVFNJR05JTkdLRVlET05PVFVTRVRISVNGT1JBTlk="
V1A_SIGNATURE = (
    "v1a,tQ9V2XOqn7jL/DQenEFpqIugdBVtiMmER5mhSkXBNwM0mkATuDe6KYYUuxqtaiHeYGb7KaaBRdM5WqyeFiL8Ag=="
)

NOW = datetime(2030, 1, 1, 12, tzinfo=UTC)


def headers(signature: str, timestamp: int = TIMESTAMP) -> dict[str, str]:
    return {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


# -- ed25519 (v1a) ---------------------------------------------------------------------------


def test_sign_asymmetric_reproduces_the_reference_test_vector() -> None:
    assert sign_asymmetric(MSG_ID, TIMESTAMP, PAYLOAD, V1A_KEY) == V1A_SIGNATURE


def test_a_receiver_with_the_public_key_verifies_a_v1a_signature() -> None:
    public = public_key_of(V1A_KEY)

    verify(PAYLOAD, headers(f"v1,bm9wZQ== {V1A_SIGNATURE}"), public, now=TIMESTAMP)
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify(PAYLOAD + b" ", headers(V1A_SIGNATURE), public, now=TIMESTAMP)
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        # A v1 signature, even a valid one, is no proof for a public key.
        verify(PAYLOAD, headers(V1_SIGNATURE), public, now=TIMESTAMP)


def test_a_public_key_of_another_pair_does_not_verify() -> None:
    _, other_public = new_signing_key()

    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify(PAYLOAD, headers(V1A_SIGNATURE), other_public, now=TIMESTAMP)


def test_a_new_key_pair_signs_what_its_public_key_verifies() -> None:
    signing_key, public = new_signing_key()

    assert signing_key.startswith("whsk_")
    assert public == public_key_of(signing_key)
    verify(
        PAYLOAD,
        headers(sign_asymmetric(MSG_ID, TIMESTAMP, PAYLOAD, signing_key)),
        public,
        now=TIMESTAMP,
    )


@pytest.mark.parametrize(
    "key", ["whsk_" + base64.b64encode(b"x" * 31).decode(), "whsk_not base64", "whpk_abc"]
)
def test_an_unusable_signing_key_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match="whsk_"):
        public_key_of(key)


def test_new_secrets_are_random_32_byte_whsec_secrets_the_reference_library_takes() -> None:
    first, second = new_secret(), new_secret()

    assert first != second
    assert len(base64.b64decode(first.removeprefix("whsec_"))) == 32
    # What we sign, the reference implementation verifies.
    now = int(datetime.now(UTC).timestamp())
    signature = sign(MSG_ID, now, PAYLOAD, first)
    standardwebhooks.Webhook(first).verify(PAYLOAD, headers(signature, now))


def test_our_v1_signature_is_the_reference_librarys() -> None:
    reference = standardwebhooks.Webhook(V1_SECRET).sign(
        MSG_ID, datetime.fromtimestamp(TIMESTAMP, UTC), PAYLOAD
    )

    assert reference == V1_SIGNATURE == sign(MSG_ID, TIMESTAMP, PAYLOAD, V1_SECRET)


# -- which keys sign -------------------------------------------------------------------------


def signatures_at(signer: WebhookSigner, source: str, at: datetime) -> list[str]:
    header = signer.signature(source, MSG_ID, int(at.timestamp()), PAYLOAD)
    return [] if header is None else header.split(" ")


def sig(secret: str, at: datetime) -> str:
    timestamp = int(at.timestamp())
    if secret.startswith("whsk_"):
        return sign_asymmetric(MSG_ID, timestamp, PAYLOAD, secret)
    return sign(MSG_ID, timestamp, PAYLOAD, secret)


@pytest.fixture
def keyring(tmp_path: Path) -> SigningKeyring:
    return SigningKeyring(tmp_path / "keys.json", reload_interval=0)


def test_every_key_active_at_the_delivery_signs_it(keyring: SigningKeyring) -> None:
    old, new, later = new_secret(), new_secret(), new_secret()
    keyring.add(SigningKey("old", "billing", old, expires_at=NOW + timedelta(hours=1)))
    keyring.add(SigningKey("new", "billing", new, not_before=NOW - timedelta(hours=1)))
    keyring.add(SigningKey("asym", "billing", V1A_KEY, not_before=NOW))
    keyring.add(SigningKey("later", "billing", later, not_before=NOW + timedelta(days=1)))
    signer = WebhookSigner({}, keyring)

    before = NOW - timedelta(hours=2)
    overlap = NOW + timedelta(minutes=30)
    after = NOW + timedelta(hours=1)  # expires_at itself is past the end
    assert signatures_at(signer, "billing", before) == [sig(old, before)]
    assert signatures_at(signer, "billing", overlap) == [
        sig(old, overlap), sig(new, overlap), sig(V1A_KEY, overlap)
    ]  # fmt: skip
    assert signatures_at(signer, "billing", after) == [sig(new, after), sig(V1A_KEY, after)]
    assert signatures_at(signer, "billing", NOW + timedelta(days=1)) == [
        sig(k, NOW + timedelta(days=1)) for k in (new, V1A_KEY, later)
    ]


def test_undated_settings_keys_and_keyring_keys_sign_together(keyring: SigningKeyring) -> None:
    fixed, rotated = new_secret(), new_secret()
    keyring.add(SigningKey("rotated", "billing", rotated))
    signer = WebhookSigner({"billing": [fixed]}, keyring)

    assert signatures_at(signer, "billing", NOW) == [sig(fixed, NOW), sig(rotated, NOW)]


def test_a_sources_own_keys_replace_the_star_keys(keyring: SigningKeyring) -> None:
    shared, own = new_secret(), new_secret()
    keyring.add(SigningKey("own", "billing", own, expires_at=NOW))
    signer = WebhookSigner({"*": [shared], "legacy": []}, keyring)

    assert signatures_at(signer, "shipping", NOW) == [sig(shared, NOW)]
    assert signatures_at(signer, "legacy", NOW) == []
    # Its only key has expired: the source goes unsigned, it doesn't fall back to "*".
    assert signatures_at(signer, "billing", NOW) == []
    assert signatures_at(signer, "billing", NOW - timedelta(1)) == [sig(own, NOW - timedelta(1))]


def test_a_key_added_by_another_process_signs_without_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    signer = WebhookSigner({}, SigningKeyring(path, reload_interval=0))
    assert signatures_at(signer, "billing", NOW) == []
    other_process = SigningKeyring(path)
    secret = new_secret()

    other_process.add(SigningKey("k1", "billing", secret))
    assert signatures_at(signer, "billing", NOW) == [sig(secret, NOW)]
    other_process.remove("k1")
    assert signatures_at(signer, "billing", NOW) == []


def test_a_keyring_spoilt_while_running_keeps_signing_with_the_keys_read_before(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys.json"
    secret = new_secret()
    SigningKeyring(path).add(SigningKey("k1", "billing", secret))
    keyring = SigningKeyring(path, reload_interval=0)
    signer = WebhookSigner({}, keyring)

    path.write_text("{ not json")
    with structlog.testing.capture_logs() as logs:
        assert signatures_at(signer, "billing", NOW) == [sig(secret, NOW)]
        assert signatures_at(signer, "billing", NOW) == [sig(secret, NOW)]

    assert keyring.error is not None
    [logged] = [entry for entry in logs if entry["log_level"] == "error"]  # once, not per call
    assert "keys read before" in logged["event"]


@pytest.mark.parametrize(
    ("secrets", "keyring_source", "warned"),
    [({"*": [V1_SECRET]}, None, True), ({}, "*", True), ({"billing": [V1_SECRET]}, "a", False)],
)
def test_a_star_key_is_warned_about_at_start_up(
    tmp_path: Path, secrets: dict[str, list[str]], keyring_source: str | None, warned: bool
) -> None:
    path = tmp_path / "keys.json"
    if keyring_source is not None:
        SigningKeyring(path).add(SigningKey("k", keyring_source, new_secret()))
    env = {"TIMEFUSE_WEBHOOK_SECRETS": json.dumps(secrets), "TIMEFUSE_SIGNING_KEYS_FILE": str(path)}

    with structlog.testing.capture_logs() as logs:
        WebhookSigner.from_settings(HttpSettings.from_env(env))

    warnings = [entry["event"] for entry in logs if entry["log_level"] == "warning"]
    assert bool(warnings) is warned
    if warned:
        assert "signs requests the others accept" in warnings[0]


# -- the keyring file ------------------------------------------------------------------------


def test_the_keyring_file_survives_a_restart_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "keys.json"
    secret = new_secret()
    keyring = SigningKeyring(path)
    keyring.add(SigningKey("k1", "billing", secret, NOW, NOW + timedelta(days=7), NOW))
    keyring.add(SigningKey("k2", "shipping", V1A_KEY))
    keyring.update("k2", not_before=NOW, expires_at=None)
    keyring.remove("k1")

    reread = SigningKeyring(path).current()

    assert reread == (SigningKey("k2", "shipping", V1A_KEY, not_before=NOW),)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert secret not in path.read_text()  # retired: gone from the disk too


def test_a_key_repr_never_shows_the_secret() -> None:
    key = SigningKey("k1", "billing", V1_SECRET)

    assert V1_SECRET not in repr(key)
    assert "k1" in repr(key)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (SigningKey("k 1", "billing", V1_SECRET), "key id"),
        (SigningKey("k1", "", V1_SECRET), "source"),
        (SigningKey("k1", "billing", "whsec_c2hvcnQ="), "24 to 64 bytes"),
        (SigningKey("k1", "billing", V1_SECRET.removeprefix("whsec_")), "must start with"),
        (SigningKey("k1", "billing", V1_SECRET, NOW, NOW), "after not_before"),
        (SigningKey("k1", "billing", V1_SECRET, datetime(2030, 1, 1)), "UTC offset"),
    ],
)
def test_an_unusable_key_is_refused_without_quoting_its_secret(
    keyring: SigningKeyring, key: SigningKey, message: str
) -> None:
    with pytest.raises(KeyringError, match=message) as raised:
        keyring.add(key)

    assert key.secret not in str(raised.value)


def test_a_key_id_is_unique(keyring: SigningKeyring) -> None:
    keyring.add(SigningKey("k1", "billing", new_secret()))

    with pytest.raises(KeyringError, match="exists already"):
        keyring.add(SigningKey("k1", "shipping", new_secret()))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]", "Expected `object`"),
        ('{"keys": [{"id": "k1", "source": "b"}]}', "missing required field `secret`"),
        ('{"keys": [{"id": "k1", "source": "b", "secret": "x", "color": 1}]}', "unknown field"),
        (
            '{"keys": [{"id": "k1", "source": "b", "secret": "whsec_c2hvcnQ="}]}',
            "key 'k1': secret must decode",
        ),
        (
            json.dumps(
                {
                    "keys": [
                        {"id": "k1", "source": "b", "secret": V1_SECRET},
                        {"id": "k1", "source": "c", "secret": V1_SECRET},
                    ]
                }
            ),
            "two keys have the id 'k1'",
        ),
    ],
)
def test_a_bad_keyring_file_stops_start_up(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "keys.json"
    path.write_text(content)

    with pytest.raises(ConfigError, match="TIMEFUSE_SIGNING_KEYS_FILE") as raised:
        HttpSettings.from_env({"TIMEFUSE_SIGNING_KEYS_FILE": str(path)})

    assert message in str(raised.value)
    assert "MfKQ9r8G" not in str(raised.value)


def test_a_keyring_file_not_there_yet_is_an_empty_keyring(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"

    settings = HttpSettings.from_env({"TIMEFUSE_SIGNING_KEYS_FILE": str(path)})

    assert settings.signing_keys_file == str(path)
    assert SigningKeyring(path).current() == ()


# -- the command line ------------------------------------------------------------------------


def test_secrets_new_prints_a_fresh_whsec_secret(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["secrets", "new"]) == 0
    first = capsys.readouterr().out.strip()
    assert main(["secrets", "new"]) == 0
    second = capsys.readouterr().out.strip()

    assert first != second
    assert first.startswith("whsec_")
    assert len(base64.b64decode(first.removeprefix("whsec_"), validate=True)) == 32


def test_secrets_new_asymmetric_prints_a_key_pair_that_goes_together(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["secrets", "new", "--asymmetric"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]

    signing_key, public = lines
    assert public == public_key_of(signing_key)
